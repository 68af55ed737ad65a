//! Stored artifacts: the index archives of a Corpus and the adapter directories of an Adapter
//! live on a PersistentVolumeClaim or in a bucket, outside the objects' lifetime. Two things
//! delete them:
//!
//! - **Retention**: when a new revision becomes active and an old one falls out of the retained
//!   history (`retainRevisions` for a Corpus, five previous revisions for an Adapter), a prune
//!   Job deletes it. The Job is created before the status that drops the revision is written, so
//!   a restarted operator computes the same set again and finds the same Job (its name is a
//!   digest of the locations).
//! - **Deletion**: a resource that has stored something carries the `hybrid.dev/stored-artifacts`
//!   finalizer. Deleting it runs one prune Job for every revision it still lists, then releases
//!   the finalizer. A failed prune Job releases it too, with a Warning Event naming what was left
//!   behind: a broken bucket must not keep a namespace from being deleted.
//!
//! Revisions are content-addressed (the same inputs give the same revision and location), so
//! two resources can share one. A location another Corpus or Adapter still lists, in any
//! namespace, is never deleted.

use crate::cluster::cached_objects::JobPod;
use crate::cluster::job_api;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::objects::{LABEL_ADAPTER, LABEL_CORPUS, name_of, namespace_of};
use crate::revisioned::jobs::{self, JobPhase};
use crate::revisioned::prune_job::{
    COMPONENT, LABEL_PRUNE_FOR, PruneFor, normalized, prune_job, prune_job_name,
};
use futures::StreamExt;
use hybrid_crds::{Adapter, AdapterStatus, Corpus, CorpusStatus};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// On every Corpus and Adapter that has stored (or is storing) a revision.
pub const FINALIZER: &str = "hybrid.dev/stored-artifacts";
/// How often a deletion waiting for its prune Job is looked at again (the Job's watch usually
/// comes first).
const FINALIZE_POLL: Duration = Duration::from_secs(10);

/// A kind whose revisions are stored outside the cluster's objects.
pub trait Stored:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
{
    /// Label naming the owner on its Jobs.
    const OWNER_LABEL: &'static str;
    /// Every location the status lists (active and retained revisions).
    fn stored_locations(&self) -> Vec<String>;
}

impl Stored for Corpus {
    const OWNER_LABEL: &'static str = LABEL_CORPUS;
    fn stored_locations(&self) -> Vec<String> {
        self.status
            .as_ref()
            .map(corpus_locations)
            .unwrap_or_default()
    }
}

impl Stored for Adapter {
    const OWNER_LABEL: &'static str = LABEL_ADAPTER;
    fn stored_locations(&self) -> Vec<String> {
        self.status
            .as_ref()
            .map(adapter_locations)
            .unwrap_or_default()
    }
}

pub fn corpus_locations(status: &CorpusStatus) -> Vec<String> {
    status
        .active_revision
        .iter()
        .chain(&status.previous_revisions)
        .map(|r| r.location.clone())
        .filter(|l| !l.is_empty())
        .collect()
}

pub fn adapter_locations(status: &AdapterStatus) -> Vec<String> {
    status
        .active_revision
        .iter()
        .chain(&status.previous_revisions)
        .map(|r| r.artifact_uri.clone())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Locations listed `before` and no longer `after` (compared as the runtime reads them).
pub fn dropped(before: &[String], after: &[String]) -> Vec<String> {
    let kept: BTreeSet<String> = normalized(after).into_iter().collect();
    normalized(before)
        .into_iter()
        .filter(|l| !kept.contains(l))
        .collect()
}

/// `locations` minus those another Corpus or Adapter (not `uid`) still lists.
fn unshared(
    locations: Vec<String>,
    uid: &str,
    corpora: &[Corpus],
    adapters: &[Adapter],
) -> Vec<String> {
    let others = |meta: &kube::api::ObjectMeta| meta.uid.as_deref() != Some(uid);
    let mut listed: BTreeSet<String> = BTreeSet::new();
    for c in corpora.iter().filter(|c| others(&c.metadata)) {
        listed.extend(normalized(&c.stored_locations()));
    }
    for a in adapters.iter().filter(|a| others(&a.metadata)) {
        listed.extend(normalized(&a.stored_locations()));
    }
    normalized(&locations)
        .into_iter()
        .filter(|l| !listed.contains(l))
        .collect()
}

/// `locations` minus those another resource of the cluster still lists.
async fn not_listed_elsewhere<K: Stored>(
    ctx: &Context,
    obj: &K,
    locations: Vec<String>,
) -> Result<Vec<String>> {
    if locations.is_empty() {
        return Ok(locations);
    }
    let corpora = Api::<Corpus>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let adapters = Api::<Adapter>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let uid = obj.meta().uid.clone().unwrap_or_default();
    Ok(unshared(locations, &uid, &corpora, &adapters))
}

/// Starts (or finds) the prune Job for `locations`; its name when there was anything to delete.
pub async fn prune<K: Stored>(
    ctx: &Context,
    obj: &K,
    locations: Vec<String>,
    purpose: PruneFor,
) -> Result<Option<String>> {
    let locations = not_listed_elsewhere(ctx, obj, locations).await?;
    if locations.is_empty() {
        return Ok(None);
    }
    let ns = namespace_of(obj)?;
    let job = prune_job(
        obj,
        K::OWNER_LABEL,
        &locations,
        &ctx.settings.runtime_image,
        purpose,
    )?;
    let name = job.metadata.name.clone().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    if jobs_api.get_opt(&name).await?.is_none()
        && job_api::create_if_absent(&jobs_api, &job).await?.1
    {
        ctx.metrics.job_started("prune");
        ctx.event(
            obj,
            false,
            "PruneRevisions",
            "CreatePruneJob",
            format!(
                "prune Job {name} deletes {} stored revision(s) no longer retained: {}",
                locations.len(),
                locations.join(", ")
            ),
        )
        .await;
    }
    Ok(Some(name))
}

fn has_finalizer<K: Resource>(obj: &K) -> bool {
    obj.meta()
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

/// Adds the finalizer unless present (no request then). The patch carries the resourceVersion
/// it was computed from, so a concurrent change of the list is a conflict, never lost.
pub async fn ensure_finalizer<K: Stored>(api: &Api<K>, obj: &K) -> Result<()> {
    if has_finalizer(obj) {
        return Ok(());
    }
    let mut finalizers = obj.meta().finalizers.clone().unwrap_or_default();
    finalizers.push(FINALIZER.to_owned());
    patch_finalizers(api, obj, finalizers).await
}

async fn release<K: Stored>(api: &Api<K>, obj: &K) -> Result<()> {
    let finalizers: Vec<String> = obj
        .meta()
        .finalizers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != FINALIZER)
        .collect();
    patch_finalizers(api, obj, finalizers).await
}

async fn patch_finalizers<K: Stored>(api: &Api<K>, obj: &K, finalizers: Vec<String>) -> Result<()> {
    let name = name_of(obj)?;
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": obj.meta().resource_version,
            "finalizers": finalizers,
        }
    });
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Already gone: nothing left to guard.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Keeps the finalizer on a resource that stores (or is about to store) revisions, and starts a
/// prune Job for the locations the new status no longer lists. Called before that status is
/// written.
pub async fn track<K: Stored>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
    before: &[String],
    after: &[String],
    storing: bool,
) -> Result<()> {
    if storing || !after.is_empty() {
        ensure_finalizer(api, obj).await?;
    }
    let gone = dropped(before, after);
    if !gone.is_empty() {
        prune(ctx, obj, gone, PruneFor::Retention).await?;
    }
    Ok(())
}

/// A deleted resource: delete its stored revisions, then release the finalizer.
pub async fn finalize<K: Stored>(ctx: &Context, api: &Api<K>, obj: &K) -> Result<Action> {
    if !has_finalizer(obj) {
        return Ok(Action::await_change());
    }
    let ns = namespace_of(obj)?;
    let owner = name_of(obj)?;
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    // Jobs still building a revision would write one nobody lists: stop them first. (A Job
    // that already published but has not reported is the one case left behind.)
    let running = jobs_api
        .list(&ListParams::default().labels(&format!(
            "{}={},{}!={}",
            K::OWNER_LABEL,
            crate::objects::label_value(&owner),
            crate::objects::LABEL_COMPONENT,
            COMPONENT
        )))
        .await?;
    for job in &running.items {
        if matches!(jobs::job_phase(job), JobPhase::Running) {
            job_api::delete(&jobs_api, &job.name_any()).await?;
        }
    }

    let locations = not_listed_elsewhere(ctx, obj, obj.stored_locations()).await?;
    if locations.is_empty() {
        release(api, obj).await?;
        return Ok(Action::await_change());
    }
    let job_name = prune_job_name(&owner, &locations);
    let Some(job) = jobs_api.get_opt(&job_name).await? else {
        // The cache may still hold an object whose finalizer was just released (and whose
        // prune Job went with it): only a live one gets a Job.
        let live = api.get_opt(&owner).await?;
        if !live.as_ref().is_some_and(has_finalizer) {
            return Ok(Action::await_change());
        }
        return match prune(ctx, obj, locations.clone(), PruneFor::Deletion).await {
            Ok(_) => Ok(Action::requeue(FINALIZE_POLL)),
            // The whole namespace is being deleted: no Job can be created in it any more.
            Err(Error::Kube(kube::Error::Api(status)))
                if status.code == 403 && status.message.contains("terminat") =>
            {
                let why = format!("namespace {ns} is being deleted, so no prune Job can run");
                let_go(ctx, api, obj, &why, &locations).await
            }
            Err(e) => Err(e),
        };
    };
    match jobs::job_phase(&job) {
        JobPhase::Running => Ok(Action::requeue(FINALIZE_POLL)),
        JobPhase::Succeeded => {
            ctx.metrics.job_finished("prune", true, &ns, &owner);
            ctx.event(
                obj,
                false,
                "ArtifactsDeleted",
                "Finalize",
                format!(
                    "deleted {} stored revision(s): {}",
                    locations.len(),
                    locations.join(", ")
                ),
            )
            .await;
            release(api, obj).await?;
            Ok(Action::await_change())
        }
        JobPhase::Failed => {
            ctx.metrics.job_finished("prune", false, &ns, &owner);
            let pods: Api<JobPod> = Api::namespaced(ctx.client.clone(), &ns);
            let state = job_api::terminated(&pods, &job_name, "prune").await?;
            let why = jobs::failure_message(state.as_ref(), "prune", runtime_error_message);
            let why = format!("prune Job {job_name} failed ({why})");
            let_go(ctx, api, obj, &why, &locations).await
        }
    }
}

/// Releases the finalizer without deleting `locations`, with a Warning saying why and what is
/// left in storage.
async fn let_go<K: Stored>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
    why: &str,
    locations: &[String],
) -> Result<Action> {
    ctx.event(
        obj,
        true,
        "PruneFailed",
        "Finalize",
        format!(
            "{why}; these stored revisions are left in storage: {}",
            locations.join(", ")
        ),
    )
    .await;
    release(api, obj).await?;
    Ok(Action::await_change())
}

/// Reports how retention prune Jobs end, since nothing waits for them: the jobs-finished metric,
/// and on failure a Warning `PruneFailed` Event on the owner naming the pod's reason and the
/// locations left in storage (they are no longer listed anywhere, so this is the only trace).
/// Each Job is reported once per process; a restarted operator may repeat the Event of a Job
/// that failed within its TTL. Deletion prune Jobs are reported by `finalize`.
pub async fn report_retention_jobs(ctx: Arc<Context>) {
    let jobs = Api::<Job>::all(ctx.client.clone());
    let selector = format!(
        "{}={COMPONENT},{LABEL_PRUNE_FOR}={},{}={}",
        crate::objects::LABEL_COMPONENT,
        PruneFor::Retention.label(),
        crate::objects::LABEL_MANAGED_BY,
        crate::objects::MANAGED_BY
    );
    let reported = std::sync::Mutex::new(BTreeSet::<String>::new());
    let ctx = &ctx;
    let reported = &reported;
    watcher(jobs, crate::cluster::caches::watch().labels(&selector))
        .default_backoff()
        .applied_objects()
        .for_each(|job| async move {
            let job = match job {
                Ok(job) => job,
                Err(e) => {
                    tracing::warn!(error = %e, "watching prune Jobs");
                    return;
                }
            };
            let succeeded = match jobs::job_phase(&job) {
                JobPhase::Running => return,
                JobPhase::Succeeded => true,
                JobPhase::Failed => false,
            };
            let uid = job.metadata.uid.clone().unwrap_or_default();
            if !reported
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(uid)
            {
                return;
            }
            report(ctx, &job, succeeded).await;
        })
        .await;
}

async fn report(ctx: &Context, job: &Job, succeeded: bool) {
    let ns = job.namespace().unwrap_or_default();
    let Some(owner) = job
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
    else {
        return;
    };
    let kind = if owner.kind == "Corpus" {
        "Corpus"
    } else {
        "Adapter"
    };
    ctx.metrics
        .job_finished("prune", succeeded, &ns, &owner.name);
    if succeeded {
        return;
    }
    let name = job.name_any();
    let locations: Vec<String> = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.args.clone())
        .unwrap_or_default()
        .windows(2)
        .filter(|w| w[0] == "--location")
        .map(|w| w[1].clone())
        .collect();
    let pods: Api<JobPod> = Api::namespaced(ctx.client.clone(), &ns);
    let state = job_api::terminated(&pods, &name, "prune")
        .await
        .ok()
        .flatten();
    let why = jobs::failure_message(state.as_ref(), "prune", runtime_error_message);
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: "PruneFailed".to_owned(),
        note: Some(
            format!(
                "prune Job {name} failed ({why}); these revisions left the retained history but are still in storage: {}",
                locations.join(", ")
            )
            .chars()
            .take(1000)
            .collect(),
        ),
        action: "Prune".to_owned(),
        secondary: None,
    };
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(owner.api_version.clone()),
        kind: Some(kind.to_owned()),
        name: Some(owner.name.clone()),
        namespace: Some(ns),
        uid: Some(owner.uid.clone()),
        ..Default::default()
    };
    if let Err(e) = ctx.events.publish(&event, &reference).await {
        tracing::warn!(error = %e, job = name, "publishing the PruneFailed Event failed");
    }
}

/// The `message` of the runtime's `PruneError` result.
fn runtime_error_message(message: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(message).ok()?;
    v.get("message")?.as_str().map(str::to_owned)
}

/// The resource is being deleted: its reconcile runs `finalize` and nothing else.
pub fn is_finalizing<K: Resource>(obj: &K) -> bool {
    obj.meta().deletion_timestamp.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures::*;
    use hybrid_crds::corpus::IndexRevision;

    fn revision(location: &str) -> IndexRevision {
        IndexRevision {
            revision: location.rsplit('/').next().unwrap_or_default().to_owned(),
            content_revision: "c".to_owned(),
            location: location.to_owned(),
            documents: 1,
            chunks: 1,
            job: None,
            created_at: None,
        }
    }

    fn with_revisions(uid: &str, active: &str, previous: &[&str]) -> Corpus {
        let mut c = corpus(FINANCE_CORPUS);
        c.metadata.uid = Some(uid.to_owned());
        c.status = Some(CorpusStatus {
            active_revision: Some(revision(active)),
            previous_revisions: previous.iter().map(|l| revision(l)).collect(),
            ..Default::default()
        });
        c
    }

    #[test]
    fn dropped_is_what_left_the_retained_history() {
        let before = vec![
            "file:///pvc/a/i/2.tar.gz".to_owned(),
            "/pvc/a/i/1.tar.gz".to_owned(),
            "/pvc/a/i/0.tar.gz".to_owned(),
        ];
        let after = vec![
            "/pvc/a/i/3.tar.gz".to_owned(),
            "/pvc/a/i/2.tar.gz".to_owned(),
            "/pvc/a/i/1.tar.gz".to_owned(),
        ];
        assert_eq!(dropped(&before, &after), ["/pvc/a/i/0.tar.gz"]);
        assert!(
            dropped(&after, &after).is_empty(),
            "an unchanged history drops nothing"
        );
        assert!(dropped(&[], &after).is_empty());
    }

    #[test]
    fn a_location_another_resource_lists_is_kept() {
        let me = with_revisions("me", "/pvc/a/i/2.tar.gz", &["/pvc/a/i/1.tar.gz"]);
        let twin = with_revisions("twin", "/pvc/a/i/1.tar.gz", &[]);
        let mut adapter = adapter(FINANCE_ADAPTER);
        adapter.metadata.uid = Some("ad".to_owned());
        let all = [me.clone(), twin];
        let left = unshared(me.stored_locations(), "me", &all, &[adapter]);
        assert_eq!(
            left,
            ["/pvc/a/i/2.tar.gz"],
            "1 is the twin's active revision"
        );
        // Its own listing does not protect anything.
        let left = unshared(me.stored_locations(), "me", std::slice::from_ref(&me), &[]);
        assert_eq!(left.len(), 2);
    }

    #[test]
    fn adapters_list_their_artifacts() {
        let mut a = adapter(FINANCE_ADAPTER);
        assert!(a.stored_locations().is_empty());
        let rev = |uri: &str| hybrid_crds::adapter::AdapterRevision {
            revision: "r".to_owned(),
            artifact_uri: uri.to_owned(),
            dataset_digest: None,
            job: None,
            final_loss: None,
            eval_loss: None,
            created_at: None,
        };
        a.status = Some(AdapterStatus {
            active_revision: Some(rev("file:///pvc/x/adapters/2")),
            previous_revisions: vec![rev("file:///pvc/x/adapters/1")],
            ..Default::default()
        });
        assert_eq!(
            a.stored_locations(),
            ["file:///pvc/x/adapters/2", "file:///pvc/x/adapters/1"]
        );
    }
}
