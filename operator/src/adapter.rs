//! Adapter controller: training revision → training Job → active adapter revision.

use crate::build::job_result::{TrainResult, parse_train_report};
use crate::build::revision::{ConfigMaps, dataset_digest, training_revision};
use crate::build::scan_job;
use crate::build::train_job::{
    TRAIN_DEADLINE_SECONDS, TrainJobInputs, image_trainer_artifact_uri, train_job, train_job_name,
};
use crate::build::{name_of, namespace_of};
use crate::cache::{Feed, OwnerCaches};
use crate::context::{Context, RESYNC};
use crate::error::{Error, Result};
use crate::jobs::{self, Decision, Observed, Wanted};
use crate::sources::{check_remote_sources, parse_refresh_interval};
use crate::status::{FIELD_MANAGER, Health, apply_status, set_condition, set_health};
use hybrid_crds::adapter::AdapterRevision;
use hybrid_crds::common::RetryState;
use hybrid_crds::conditions::{reasons, types};
use hybrid_crds::{Adapter, AdapterStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use std::sync::Arc;
use std::time::Duration;

pub const KIND: &str = "Adapter";

/// `adapters`: the Adapter cache and watch, shared with the HybridModel controller; `config_maps`:
/// the source ConfigMaps ([`cache::source_config_maps`]).
pub async fn run(ctx: Arc<Context>, adapters: Feed<Adapter>, config_maps: Feed<ConfigMap>) {
    crate::cache::run_owner_controller(
        ctx,
        KIND,
        crate::build::LABEL_ADAPTER,
        adapters,
        config_maps,
        references_config_map,
        reconcile,
    )
    .await;
}

pub fn references_config_map(adapter: &Adapter, name: &str) -> bool {
    adapter
        .spec
        .dataset
        .iter()
        .any(|s| s.config_map.as_ref().is_some_and(|c| c.name == name))
}

async fn reconcile(
    adapter: Arc<Adapter>,
    ctx: Arc<Context>,
    caches: OwnerCaches,
) -> Result<Action> {
    caches.ready().await;
    let _timer = ctx.metrics.reconcile_timer(KIND);
    let ns = namespace_of(&*adapter)?;
    let name = name_of(&*adapter)?;
    let adapters: Api<Adapter> = Api::namespaced(ctx.client.clone(), &ns);
    let current = adapter.status.clone().unwrap_or_default();
    let now = crate::status::now();
    if crate::prune::is_finalizing(&*adapter) {
        return crate::prune::finalize(&ctx, &adapters, &*adapter).await;
    }

    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);

    // Validate, then resolve: the ConfigMaps, HTTP bodies and scan digest that make up the
    // dataset digest.
    let config_maps = read_config_maps(&caches, &ns, &adapter);
    let resolved = match refresh_interval(&adapter.spec) {
        Ok(refresh) => {
            check_remote_sources(
                &ctx,
                &caches,
                &*adapter,
                &scan_job::ADAPTER,
                &adapter.spec.dataset,
                &jobs_api,
                &current,
                refresh,
            )
            .await
        }
        Err(e) => Err(e),
    };
    let remote = match resolved {
        Ok(r) => r,
        Err(e) if !e.is_transient() => {
            return stall(&ctx, &adapters, &adapter, &current, &e, &now).await;
        }
        Err(e) => return Err(e),
    };
    let uid = adapter.metadata.uid.clone().unwrap_or_default();
    let refresh_wait = || ctx.refresh.wait(&uid, std::time::Instant::now());

    let Some(digests) = remote.digests.clone() else {
        // The revision cannot be known before the scan or the first fetch: say why, and wait.
        let (reason, message) = remote.pending.clone().unwrap_or((
            reasons::SOURCE_UNREADABLE,
            "datasets not checked yet".to_owned(),
        ));
        let mut status = current.clone();
        let generation = adapter.metadata.generation;
        status.observed_generation = generation;
        remote.apply_to(&mut status, generation, &now);
        set_health(
            &mut status.conditions,
            &Health::reconciling(reason, message.clone()),
            generation,
            &now,
        );
        set_condition(
            &mut status.conditions,
            types::TRAINED,
            false,
            reason,
            &message,
            generation,
            &now,
        );
        record(&ctx, &ns, &name, &status, &now);
        if apply_status(&adapters, &*adapter, adapter.status.as_ref(), &status).await?
            && let Some((reason, note)) = remote.event.clone()
        {
            ctx.event(&*adapter, true, reason, "CheckSources", note)
                .await;
        }
        let wait = refresh_wait().unwrap_or(jobs::RUNNING_POLL);
        return Ok(Action::requeue(if remote.scan_running {
            wait.min(jobs::RUNNING_POLL)
        } else {
            wait
        }));
    };
    let revisions = dataset_digest(&adapter.spec.dataset, &config_maps, &digests)
        .and_then(|ds| training_revision(&adapter.spec, &ds).map(|tr| (ds, tr)));
    let (dataset, revision) = match revisions {
        Ok(r) => r,
        Err(e) if !e.is_transient() => {
            return stall(&ctx, &adapters, &adapter, &current, &e, &now).await;
        }
        Err(e) => return Err(e),
    };

    let job_name = train_job_name(&name, &revision);
    let observed = observe(&ctx, &caches, &ns, &adapter, &job_name, &revision).await?;
    let wanted = Wanted {
        revision: &revision,
        job_name: &job_name,
        // The adapter revision id is the runtime's; the Job that trained it names the training
        // revision it came from.
        active_matches: current
            .active_revision
            .as_ref()
            .is_some_and(|a| a.job.as_deref() == Some(job_name.as_str())),
        retry: current.retry.as_ref(),
        last_job: current.last_job.as_ref(),
    };
    let (created, finished) = match &observed {
        Observed::Finished {
            created, finished, ..
        } => (created.clone(), finished.clone()),
        Observed::Running { created, .. } => (created.clone(), None),
        Observed::Absent => (None, None),
    };
    let abandoned = jobs::abandoned(&observed, now.0);
    let decision = jobs::decide(&wanted, observed, now.0);

    // None: wait for a change (a watch event, or the next dataset check when one is planned).
    let mut requeue = Some(RESYNC);
    let mut started = created;
    match &decision {
        Decision::CreateJob => {
            let built = match train_job(
                &adapter,
                &TrainJobInputs {
                    training_revision: &revision,
                    runtime_images: ctx.settings.runtime_images(),
                    config_maps: &config_maps,
                },
            ) {
                Ok(b) => b,
                Err(e) if !e.is_transient() => {
                    return stall(&ctx, &adapters, &adapter, &current, &e, &now).await;
                }
                Err(e) => return Err(e),
            };
            if let Some(config) = &built.config {
                let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
                cms.patch(
                    &job_name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(config),
                )
                .await?;
            }
            let (job, created) = jobs::create_if_absent(&jobs_api, &built.job).await?;
            started = job.metadata.creation_timestamp.clone();
            if created {
                ctx.metrics.job_started("train");
                ctx.event(
                    &*adapter,
                    false,
                    reasons::TRAINING,
                    "CreateTrainingJob",
                    format!("training Job {job_name} started for training revision {revision}"),
                )
                .await;
            }
            requeue = Some(jobs::RUNNING_POLL);
        }
        Decision::Running { .. } => requeue = Some(jobs::RUNNING_POLL),
        Decision::DeleteCountedFailure => {
            jobs::delete(&jobs_api, &job_name).await?;
            requeue = Some(wait_until(
                current
                    .retry
                    .as_ref()
                    .and_then(|r| r.next_attempt_at.as_ref()),
                &now,
            ));
        }
        Decision::Failed {
            next_attempt_at, ..
        } => {
            requeue = next_attempt_at
                .as_ref()
                .map(|until| wait_until(Some(until), &now));
        }
        Decision::WaitForRetry { until } => requeue = Some(wait_until(Some(until), &now)),
        Decision::Exhausted => requeue = None,
        Decision::UpToDate | Decision::Succeeded(_) => {}
    }

    let (mut status, event) = next_status(
        &adapter, &current, &dataset, &revision, &job_name, &decision, started, finished, &now,
    );
    remote.apply_to(&mut status, adapter.metadata.generation, &now);
    // Stored revisions: guarded by the finalizer; those leaving the history are deleted.
    crate::prune::track(
        &ctx,
        &adapters,
        &*adapter,
        &crate::prune::adapter_locations(&current),
        &crate::prune::adapter_locations(&status),
        matches!(
            decision,
            Decision::CreateJob | Decision::Running { .. } | Decision::Succeeded(_)
        ),
    )
    .await?;
    record(&ctx, &ns, &name, &status, &now);
    if apply_status(&adapters, &*adapter, adapter.status.as_ref(), &status).await? {
        // Written once per finished Job: the status records it, so the next reconcile is a no-op.
        match &decision {
            Decision::Succeeded(_) => ctx.metrics.job_finished("train", true, &ns, &name),
            Decision::Failed { .. } => ctx.metrics.job_finished("train", false, &ns, &name),
            _ => {}
        }
        if let Some((warning, reason, note)) = event {
            ctx.event(&*adapter, warning, reason, "Reconcile", note)
                .await;
        }
        if let Some((reason, note)) = remote.event.clone() {
            ctx.event(&*adapter, true, reason, "CheckSources", note)
                .await;
        }
    }
    // A Job stuck past its bound is deleted even when no retry follows: it would otherwise wait
    // for its deadline.
    match &decision {
        Decision::Failed { .. } if abandoned => jobs::delete(&jobs_api, &job_name).await?,
        Decision::Failed {
            next_attempt_at: Some(_),
            ..
        } => jobs::delete(&jobs_api, &job_name).await?,
        Decision::Succeeded(_) => {
            jobs::delete_stale(
                &jobs_api,
                &caches,
                crate::build::LABEL_ADAPTER,
                &name,
                &job_name,
            )
            .await?
        }
        _ => {}
    }
    // A planned dataset check comes sooner than the resync (or than waiting for a change): a
    // changed dataset is also what ends a spent retry budget.
    let requeue = match (requeue, refresh_wait()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(requeue.map_or_else(Action::await_change, |wait| {
        Action::requeue(wait.max(Duration::from_secs(1)))
    }))
}

/// `spec.refreshInterval`, parsed; a malformed one is an invalid spec naming the field.
fn refresh_interval(spec: &hybrid_crds::AdapterSpec) -> Result<Option<Duration>> {
    spec.refresh_interval
        .as_deref()
        .map(parse_refresh_interval)
        .transpose()
        .map_err(Error::InvalidSpec)
}

/// Time until `until` (at least a second), or the first backoff when there is no time.
fn wait_until(until: Option<&Time>, now: &Time) -> Duration {
    match until {
        Some(until) => {
            let wait = until.0.duration_since(now.0).as_secs().max(1);
            Duration::from_secs(wait as u64)
        }
        None => jobs::BASE_BACKOFF,
    }
}

/// The alerts' per-object gauges (stalled, revision stale) from the status being written.
fn record(ctx: &Context, ns: &str, name: &str, status: &AdapterStatus, now: &Time) {
    ctx.metrics.record_status(
        KIND,
        ns,
        name,
        &status.conditions,
        Some(types::TRAINED),
        now,
    );
}

async fn stall(
    ctx: &Context,
    api: &Api<Adapter>,
    adapter: &Adapter,
    current: &AdapterStatus,
    e: &Error,
    now: &Time,
) -> Result<Action> {
    let mut status = current.clone();
    let generation = adapter.metadata.generation;
    status.observed_generation = generation;
    set_health(
        &mut status.conditions,
        &Health::stalled(e.label(), e.to_string()),
        generation,
        now,
    );
    set_condition(
        &mut status.conditions,
        types::TRAINED,
        false,
        e.label(),
        &e.to_string(),
        generation,
        now,
    );
    if let (Some(ns), Some(name)) = (
        adapter.metadata.namespace.as_deref(),
        adapter.metadata.name.as_deref(),
    ) {
        record(ctx, ns, name, &status, now);
    }
    if apply_status(api, adapter, adapter.status.as_ref(), &status).await? {
        ctx.event(adapter, true, e.label(), "Reconcile", e.to_string())
            .await;
    }
    Ok(Action::await_change())
}

/// The status the decision leads to, and the Event worth publishing if it is written.
#[allow(clippy::too_many_arguments)]
pub fn next_status(
    adapter: &Adapter,
    current: &AdapterStatus,
    dataset: &str,
    revision: &str,
    job_name: &str,
    decision: &Decision<TrainResult>,
    started: Option<Time>,
    finished: Option<Time>,
    now: &Time,
) -> (AdapterStatus, Option<(bool, &'static str, String)>) {
    let generation = adapter.metadata.generation;
    let mut status = current.clone();
    status.observed_generation = generation;
    let mut event = None;
    let active = match &status.active_revision {
        Some(a) => format!("revision {} stays active", a.revision),
        None => "no revision is active yet".to_owned(),
    };
    let failures = |s: &AdapterStatus| s.retry.as_ref().map_or(0, |r| r.failures);
    let (health, trained) = match decision {
        Decision::UpToDate => {
            status.retry = None;
            status.progress = None;
            let msg = status
                .active_revision
                .as_ref()
                .map(active_message)
                .unwrap_or_default();
            (
                Health::ready(reasons::SUCCEEDED, msg.clone()),
                (true, reasons::SUCCEEDED, msg),
            )
        }
        Decision::Running { stuck: Some(stuck) } => {
            status.last_job = Some(jobs::record(
                job_name, revision, "Running", started, None, None,
            ));
            let msg = format!(
                "training Job {job_name} for revision {revision} is stuck: {}; {active}; after {} in {} the Job is stopped and counts as a failed attempt",
                stuck.message,
                crate::stuck::human(stuck.bound()),
                stuck.reason
            );
            // Once per stuck state: the status keeps its reason while the pod stays so.
            if crate::status::find(&current.conditions, types::TRAINED)
                .is_none_or(|c| c.reason != stuck.reason)
            {
                event = Some((true, stuck.reason, msg.clone()));
            }
            (
                Health::reconciling(stuck.reason, msg.clone()),
                (false, stuck.reason, msg),
            )
        }
        Decision::CreateJob | Decision::Running { stuck: None } => {
            status.last_job = Some(jobs::record(
                job_name, revision, "Running", started, None, None,
            ));
            let msg = format!("training Job {job_name} trains revision {revision}; {active}");
            (
                Health::reconciling(reasons::TRAINING, msg.clone()),
                (false, reasons::TRAINING, msg),
            )
        }
        Decision::Succeeded(result) => {
            let new = AdapterRevision {
                revision: result.revision.clone(),
                artifact_uri: result.artifact_uri.clone(),
                dataset_digest: Some(dataset.to_owned()),
                job: Some(job_name.to_owned()),
                // Image trainers that write no result report no loss.
                final_loss: Some(result.final_loss).filter(|l| l.is_finite()),
                eval_loss: result.eval_loss,
                created_at: finished.clone().or_else(|| Some(now.clone())),
            };
            if let Some(previous) = status.active_revision.replace(new) {
                status.previous_revisions.insert(0, previous);
            }
            // Adapters have no retention setting; keep a bounded history for rollback.
            status.previous_revisions.truncate(MAX_PREVIOUS);
            status.retry = None;
            status.progress = None;
            status.last_job = Some(jobs::record(
                job_name,
                revision,
                "Succeeded",
                started,
                finished,
                None,
            ));
            // The condition message is the one later passes derive again, so the next
            // reconcile writes nothing; the Event carries the run's details.
            let msg = status
                .active_revision
                .as_ref()
                .map(active_message)
                .unwrap_or_default();
            event = Some((
                false,
                reasons::SUCCEEDED,
                format!(
                    "{msg} ({} steps in {:.0}s)",
                    result.steps, result.duration_seconds
                ),
            ));
            (
                Health::ready(reasons::SUCCEEDED, msg.clone()),
                (true, reasons::SUCCEEDED, msg),
            )
        }
        Decision::Failed {
            failures,
            message,
            next_attempt_at,
        } => {
            status.last_job = Some(jobs::record(
                job_name,
                revision,
                "Failed",
                started,
                finished,
                Some(message.clone()),
            ));
            status.retry = Some(RetryState {
                revision: revision.to_owned(),
                failures: *failures,
                next_attempt_at: next_attempt_at.clone(),
            });
            failure_health(
                &mut event,
                *failures,
                message,
                &active,
                next_attempt_at.is_some(),
            )
        }
        Decision::DeleteCountedFailure | Decision::WaitForRetry { .. } | Decision::Exhausted => {
            let message = status
                .last_job
                .as_ref()
                .and_then(|j| j.message.clone())
                .unwrap_or_default();
            let mut no_event = None;
            failure_health(
                &mut no_event,
                failures(&status),
                &message,
                &active,
                !matches!(decision, Decision::Exhausted),
            )
        }
    };
    status.dataset_digest = Some(dataset.to_owned());
    status.training_revision = Some(revision.to_owned());
    set_health(&mut status.conditions, &health, generation, now);
    set_condition(
        &mut status.conditions,
        types::TRAINED,
        trained.0,
        trained.1,
        &trained.2,
        generation,
        now,
    );
    (status, event)
}

fn active_message(active: &AdapterRevision) -> String {
    match active.final_loss {
        Some(loss) => format!(
            "adapter revision {} is active (final loss {loss:.4})",
            active.revision
        ),
        None => format!("adapter revision {} is active", active.revision),
    }
}

/// Earlier adapter revisions kept in status for rollback.
pub const MAX_PREVIOUS: usize = 5;

fn failure_health(
    event: &mut Option<(bool, &'static str, String)>,
    failures: i32,
    message: &str,
    active: &str,
    retrying: bool,
) -> (Health, (bool, &'static str, String)) {
    if retrying {
        let msg = format!(
            "training Job failed ({failures}/{} attempts): {message}; {active}, retrying with backoff",
            jobs::MAX_ATTEMPTS
        );
        *event = Some((true, reasons::JOB_FAILED, msg.clone()));
        (
            Health::reconciling(reasons::JOB_FAILED, msg.clone()),
            (false, reasons::JOB_FAILED, msg),
        )
    } else {
        let msg = format!(
            "training Job failed {failures} times, last: {message}; {active}. Fix the dataset or spec to try a new revision"
        );
        *event = Some((true, reasons::RETRY_BUDGET_EXHAUSTED, msg.clone()));
        (
            Health::stalled(reasons::RETRY_BUDGET_EXHAUSTED, msg.clone()),
            (false, reasons::RETRY_BUDGET_EXHAUSTED, msg),
        )
    }
}

fn read_config_maps(caches: &OwnerCaches, ns: &str, adapter: &Adapter) -> ConfigMaps {
    (adapter.spec.dataset.iter())
        .filter_map(|s| s.config_map.as_ref())
        .filter_map(|source| {
            let cm = caches.config_map(ns, &source.name)?;
            Some((source.name.clone(), (*cm).clone()))
        })
        .collect()
}

async fn observe(
    ctx: &Context,
    caches: &OwnerCaches,
    ns: &str,
    adapter: &Adapter,
    job_name: &str,
    revision: &str,
) -> Result<Observed<TrainResult>> {
    let Some(job) = caches.job(ns, job_name) else {
        return Ok(Observed::Absent);
    };
    let created = job.metadata.creation_timestamp.clone();
    let finished = jobs::finished_at(&*job);
    let phase = jobs::job_phase(&*job);
    if let jobs::JobPhase::Running = phase {
        let stuck = caches.stuck(ns, job_name);
        return Ok(Observed::Running { created, stuck });
    }
    let state = caches
        .terminated(&ctx.client, ns, job_name, "train")
        .await?;
    let outcome = match phase {
        jobs::JobPhase::Succeeded => {
            let message = (state.clone()).and_then(|t| t.message).unwrap_or_default();
            match parse_train_report(&message) {
                Ok(Ok(result)) => Ok(result),
                Ok(Err(failure)) => Err(failure.to_string()),
                // A user image need not speak the result contract: its adapter is where /output
                // was mounted.
                Err(_) if adapter.spec.trainer.image.is_some() => Ok(TrainResult {
                    revision: revision.to_owned(),
                    artifact_uri: image_trainer_artifact_uri(adapter, revision)?,
                    final_loss: f64::NAN,
                    eval_loss: None,
                    steps: 0,
                    tokens_per_second: 0.0,
                    duration_seconds: 0.0,
                }),
                Err(e) => Err(e.to_string()),
            }
        }
        _ => {
            Err(jobs::job_failure_message(
                &*job,
                Duration::from_secs(TRAIN_DEADLINE_SECONDS as u64),
                state.as_ref(),
                "train",
                |m| match parse_train_report(m) {
                    Ok(Err(failure)) => Some(failure.to_string()),
                    // FallbackToLogsOnError: a crash leaves the log tail instead of JSON.
                    _ => None,
                },
            ))
        }
    };
    Ok(Observed::Finished {
        created,
        finished,
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{FINANCE_ADAPTER, adapter};
    use crate::status::{find, is_true};

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("ts"))
    }

    fn result(rev: &str, loss: f64) -> TrainResult {
        TrainResult {
            revision: rev.into(),
            artifact_uri: format!("file:///pvc/hybrid-artifacts/adapters/{rev}"),
            final_loss: loss,
            eval_loss: Some(1.5),
            steps: 40,
            tokens_per_second: 100.0,
            duration_seconds: 60.0,
        }
    }

    #[test]
    fn success_records_lineage_and_is_stable_without_a_loss() {
        let a = adapter(FINANCE_ADAPTER);
        let current = AdapterStatus {
            active_revision: Some(AdapterRevision {
                revision: "ad-1".into(),
                artifact_uri: "file:///x/ad-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (status, _) = next_status(
            &a,
            &current,
            "ds1",
            "tr2",
            "finance-compliance-train-tr2",
            &Decision::Succeeded(result("ad-2", f64::NAN)),
            Some(t(1)),
            Some(t(5)),
            &t(6),
        );
        let active = status.active_revision.clone().expect("active");
        assert_eq!(active.revision, "ad-2");
        assert_eq!(active.dataset_digest.as_deref(), Some("ds1"));
        assert_eq!(active.job.as_deref(), Some("finance-compliance-train-tr2"));
        assert_eq!(
            active.final_loss, None,
            "NaN is not a loss; it would also never compare equal"
        );
        assert_eq!(status.previous_revisions[0].revision, "ad-1");
        assert_eq!(status.training_revision.as_deref(), Some("tr2"));
        assert!(is_true(&status.conditions, "Trained"));
        assert!(is_true(&status.conditions, "Ready"));
        let (again, _) = next_status(
            &a,
            &status,
            "ds1",
            "tr2",
            "finance-compliance-train-tr2",
            &Decision::UpToDate,
            None,
            None,
            &t(7),
        );
        assert_eq!(again.active_revision, status.active_revision);
        assert_eq!(again.conditions, status.conditions);
    }

    #[test]
    fn a_training_pod_without_its_secret_shows_the_kubelets_message_once() {
        let a = adapter(FINANCE_ADAPTER);
        let stuck = crate::stuck::Stuck {
            reason: "CreateContainerConfigError",
            pod: "finance-compliance-train-tr2-x7".into(),
            message: "pod finance-compliance-train-tr2-x7 cannot create container train (a Secret or ConfigMap it reads is missing): secret \"hf-token\" not found".into(),
            since: Some(k8s_openapi::jiff::Timestamp::from_second(1).expect("ts")),
        };
        let running = |current: &AdapterStatus| {
            next_status(
                &a,
                current,
                "ds1",
                "tr2",
                "finance-compliance-train-tr2",
                &Decision::Running {
                    stuck: Some(stuck.clone()),
                },
                Some(t(1)),
                None,
                &t(6),
            )
        };
        let (status, event) = running(&AdapterStatus::default());
        let trained = find(&status.conditions, "Trained").expect("trained");
        assert_eq!(trained.reason, "CreateContainerConfigError");
        assert!(
            trained.message.contains("secret \"hf-token\" not found")
                && trained.message.contains("no revision is active yet"),
            "{}",
            trained.message
        );
        assert!(is_true(&status.conditions, "Reconciling"));
        assert_eq!(event.expect("event").1, "CreateContainerConfigError");
        let (again, event) = running(&status);
        assert_eq!(again.conditions, status.conditions);
        assert!(event.is_none());
    }

    #[test]
    fn refresh_interval_errors_name_the_field() {
        let with = |interval: &str| {
            adapter(&FINANCE_ADAPTER.replace(
                "  method: lora",
                &format!("  method: lora\n  refreshInterval: {interval}"),
            ))
        };
        let err = refresh_interval(&with("5s").spec).expect_err("too short");
        assert_eq!(err.label(), "InvalidSpec");
        assert!(err.to_string().contains("spec.refreshInterval"), "{err}");
        assert_eq!(
            refresh_interval(&with("15m").spec).expect("parses"),
            Some(Duration::from_secs(900))
        );
        assert_eq!(
            refresh_interval(&adapter(FINANCE_ADAPTER).spec).expect("unset"),
            None
        );
    }

    #[test]
    fn failure_keeps_serving_revision_and_reports_training_false() {
        let a = adapter(FINANCE_ADAPTER);
        let current = AdapterStatus {
            active_revision: Some(AdapterRevision {
                revision: "ad-1".into(),
                artifact_uri: "file:///x/ad-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (status, event) = next_status(
            &a,
            &current,
            "ds2",
            "tr2",
            "j",
            &Decision::Failed {
                failures: 2,
                message: "SequenceTooLong: line 7".into(),
                next_attempt_at: Some(t(100)),
            },
            Some(t(1)),
            Some(t(5)),
            &t(6),
        );
        assert_eq!(status.active_revision.expect("kept").revision, "ad-1");
        let trained = find(&status.conditions, "Trained").expect("trained");
        assert_eq!(
            (trained.status.as_str(), trained.reason.as_str()),
            ("False", "JobFailed")
        );
        assert!(trained.message.contains("2/3"), "{}", trained.message);
        assert!(trained.message.contains("SequenceTooLong"));
        assert_eq!(event.expect("event").1, "JobFailed");
    }
}
