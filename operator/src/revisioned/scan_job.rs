//! The scan Job of a Corpus or an Adapter: `hybrid-runtime scan` lists its PVC and S3 sources
//! or datasets (path or key, size, mtime or ETag; no contents) and reports a digest of the
//! listing, which the operator folds into the content or training revision. One per owner at a
//! time, under a fixed name, deleted once its result is read.

use crate::digest::ContentDigest;
use crate::error::Result;
use crate::objects::data_sources::{s3_env, source_arg};
use crate::objects::storage::ClaimMounts;
use crate::objects::{
    LABEL_ADAPTER, LABEL_COMPONENT, LABEL_CORPUS, LABEL_MANAGED_BY, LABEL_REVISION, MANAGED_BY,
    name_of,
};
use crate::revisioned::utility_job::{UtilityJob, utility_job};
use hybrid_crds::common::DataSource;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Volume, VolumeMount};
use kube::Resource;
use std::collections::BTreeMap;

/// A listing is a `stat` per file or a LIST request per thousand keys: a tenth of a core does
/// it, and 256 MiB holds the listing of about a million objects.
const SCAN_CPU: &str = "100m";
const SCAN_MEMORY: &str = "256Mi";
/// A scan that hangs (an unreachable endpoint, a stuck volume) fails after this, so the next
/// refresh can start another.
pub const SCAN_DEADLINE_SECONDS: i64 = 600;

/// Whose sources a scan Job lists, and how its name, labels and messages refer to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanOwner {
    /// Label carrying the owner's name on its Jobs.
    pub label: &'static str,
    /// The spec field listing the sources, for messages.
    pub field: &'static str,
    /// The revision the digests feed, for messages.
    pub revision: &'static str,
    /// `<owner>-<suffix>` is the Job's name; the two kinds differ, so a Corpus and an Adapter
    /// of the same name never share a scan Job.
    pub job_suffix: &'static str,
}

pub const CORPUS: ScanOwner = ScanOwner {
    label: LABEL_CORPUS,
    field: "sources",
    revision: "content revision",
    job_suffix: "scan",
};

pub const ADAPTER: ScanOwner = ScanOwner {
    label: LABEL_ADAPTER,
    field: "dataset",
    revision: "training revision",
    job_suffix: "dataset-scan",
};

/// The sources the scan lists, with their position in the list.
pub fn scanned_sources(sources: &[DataSource]) -> Vec<(usize, &DataSource)> {
    sources
        .iter()
        .enumerate()
        .filter(|(_, s)| s.persistent_volume_claim.is_some() || s.s3.is_some())
        .collect()
}

/// Digest of the scanned sources' specs: a stored scan counts only for the sources it listed.
/// None when there is no PVC or S3 source (nothing to scan).
pub fn scan_sources_key(sources: &[DataSource]) -> Result<Option<String>> {
    let scanned = scanned_sources(sources);
    if scanned.is_empty() {
        return Ok(None);
    }
    let mut d = ContentDigest::new("hybrid.dev/source-scan-sources/v1");
    for (i, source) in scanned {
        d.field("source", i.to_string());
        d.json_field("spec", source)?;
    }
    Ok(Some(d.finish_revision()))
}

/// `<corpus>-scan` or `<adapter>-dataset-scan`, cut so it stays a valid label value
/// (`job-name`).
pub fn scan_job_name(owner: &str, kind: &ScanOwner) -> String {
    let mut base: String = owner.chars().take(63 - 1 - kind.job_suffix.len()).collect();
    while base.ends_with(['-', '.']) {
        base.pop();
    }
    format!("{base}-{}", kind.job_suffix)
}

pub fn scan_job<K: Resource<DynamicType = ()>>(
    owner: &K,
    kind: &ScanOwner,
    sources: &[DataSource],
    sources_key: &str,
    runtime_image: &str,
) -> Result<Job> {
    let name = name_of(owner)?;
    let mut claims = ClaimMounts::default();
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut s3 = None;
    let mut args = Vec::new();
    for (i, source) in scanned_sources(sources) {
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

    let labels = BTreeMap::from([
        (kind.label.to_owned(), crate::objects::label_value(&name)),
        (LABEL_REVISION.to_owned(), sources_key.to_owned()),
        (LABEL_COMPONENT.to_owned(), "scan".to_owned()),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
    ]);
    utility_job(
        owner,
        UtilityJob {
            name: scan_job_name(&name, kind),
            command: "scan",
            args,
            labels,
            env: s3.map(s3_env),
            volumes,
            mounts,
            cpu: SCAN_CPU,
            memory: SCAN_MEMORY,
            backoff_limit: 0,
            deadline_seconds: SCAN_DEADLINE_SECONDS,
            ttl_seconds: None,
        },
        runtime_image,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures::*;

    #[test]
    fn scan_job_lists_only_the_pvc_and_s3_sources_read_only() {
        let c = corpus(&FINANCE_CORPUS.replace(
            "    - persistentVolumeClaim: {claimName: filings, path: /docs}",
            "    - persistentVolumeClaim: {claimName: filings, path: /docs}\n    - http: {url: https://example.com/a.md}\n    - s3: {bucket: docs-bucket, prefix: handbook/, credentialsSecretRef: {name: s3-creds}}",
        ));
        let key = scan_sources_key(&c.spec.sources)
            .expect("key")
            .expect("scanned");
        let job = scan_job(
            &c,
            &CORPUS,
            &c.spec.sources,
            &key,
            "ghcr.io/hybrid/runtime:1",
        )
        .expect("job");
        assert_eq!(job.metadata.name.as_deref(), Some("finance-notes-scan"));
        let labels = job.metadata.labels.clone().expect("labels");
        assert_eq!(labels["app.kubernetes.io/component"], "scan");
        assert_eq!(labels["hybrid.dev/revision"], key);
        let spec = job.spec.expect("spec");
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(SCAN_DEADLINE_SECONDS));
        let pod = spec.template.spec.expect("pod");
        assert!(pod.node_selector.is_none() && pod.tolerations.is_none());
        let c0 = &pod.containers[0];
        assert_eq!(
            c0.args.clone().expect("args"),
            [
                "scan",
                "--source",
                "/pvc/filings/docs",
                "--source",
                "s3://docs-bucket/handbook/",
                "--result-path",
                "/dev/termination-log"
            ]
        );
        let limits = c0.resources.clone().expect("res").limits.expect("limits");
        assert_eq!(limits.len(), 2, "cpu and memory, no GPU: {limits:?}");
        assert!(
            c0.env
                .as_ref()
                .expect("env")
                .iter()
                .any(|e| e.name == "AWS_ACCESS_KEY_ID")
        );
        let writable: Vec<_> = c0
            .volume_mounts
            .as_ref()
            .expect("mounts")
            .iter()
            .filter(|m| m.read_only != Some(true))
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(writable, ["/tmp"], "sources are mounted read-only");
    }

    #[test]
    fn the_key_follows_the_scanned_specs_only() {
        let base = corpus(FINANCE_CORPUS);
        let key = scan_sources_key(&base.spec.sources).expect("key");
        assert!(key.is_some());
        let moved = corpus(&FINANCE_CORPUS.replace("path: /docs", "path: /docs2"));
        assert_ne!(scan_sources_key(&moved.spec.sources).expect("key"), key);
        let rechunked = corpus(&FINANCE_CORPUS.replace("size: 256", "size: 512"));
        assert_eq!(scan_sources_key(&rechunked.spec.sources).expect("key"), key);
        let cm_only = corpus(&FINANCE_CORPUS.replace(
            "    - persistentVolumeClaim: {claimName: filings, path: /docs}\n",
            "",
        ));
        assert_eq!(scan_sources_key(&cm_only.spec.sources).expect("key"), None);
    }

    #[test]
    fn long_names_stay_valid_label_values() {
        let name = scan_job_name(&"c".repeat(80), &CORPUS);
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("c-scan"));
        let name = scan_job_name(&"a".repeat(80), &ADAPTER);
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("a-dataset-scan"));
        assert_ne!(
            scan_job_name("finance", &CORPUS),
            scan_job_name("finance", &ADAPTER),
            "a Corpus and an Adapter of the same name get their own scan Job"
        );
    }
}
