//! The driver every revisioned kind shares: inputs → revision → Job → active revision.
//!
//! A Corpus (index Jobs) and an Adapter (training Jobs) follow the same pipeline; the kind
//! brings only what differs through [`Revisioned`]: how its revision is computed, which Job
//! builds it, how the Job's result is read, and how a result becomes the active revision.
//!
//! resolve (ConfigMaps, HTTP bodies, scan digests) → revision → [`jobs::decide`] → act on the
//! decision (create, wait, delete a counted failure) → [`next_status`] (pure) → stored
//! revisions tracked ([`stored::track`]) → status written once → Events and metrics.

pub mod inputs;
pub mod jobs;
pub mod prune_job;
pub mod refresh;
pub mod results;
pub mod scan_job;
pub mod sources;
pub mod stored;
pub mod utility_job;

use crate::cluster::caches::{Feed, OwnerCaches};
use crate::cluster::job_api;
use crate::context::{Context, RESYNC};
use crate::error::{Error, Result};
use crate::objects::{name_of, namespace_of};
use crate::status::{FIELD_MANAGER, Health, apply_status, set_condition, set_health};
use hybrid_crds::common::{Conditions, DataSource, JobRecord, Progress, RetryState};
use hybrid_crds::conditions::reasons;
use inputs::{ConfigMaps, RemoteDigests};
use jobs::{Decision, Observed, Wanted};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use scan_job::ScanOwner;
use sources::{SourcesStatus, check_remote_sources, parse_refresh_interval};
use std::sync::Arc;
use std::time::Duration;
use stored::Stored;

/// How a kind's Jobs, revisions and messages are named; the words differ, the pipeline not.
#[derive(Clone, Copy, Debug)]
pub struct Words {
    /// `Corpus`, `Adapter`: the reconcile metrics' kind label.
    pub kind: &'static str,
    /// The runtime command and container of its Jobs (`index`, `train`): the Job metrics' label.
    pub command: &'static str,
    /// `index Job`, `training Job`.
    pub job: &'static str,
    /// What the Job does to the revision: `builds content revision`, `trains revision`.
    pub builds: &'static str,
    /// The revision a stuck Job was for: `content revision`, `revision`.
    pub revision: &'static str,
    /// The revision in the Event of a created Job: `content revision`, `training revision`.
    pub started_for: &'static str,
    /// The condition the kind owns (`Indexed`, `Trained`).
    pub condition: &'static str,
    /// The reason while a Job builds (`Indexing`, `Training`).
    pub building: &'static str,
    /// The Event action of a created Job.
    pub create_action: &'static str,
    /// What to fix when the retry budget is spent (`sources`, `dataset`).
    pub inputs: &'static str,
    /// Why the revision is unknown before any check (`sources not checked yet`).
    pub unchecked: &'static str,
    /// Seconds a Job may run (its `activeDeadlineSeconds`), for its failure message.
    pub deadline_seconds: i64,
    /// Whose sources a scan Job lists.
    pub scan: ScanOwner,
}

/// The status fields the driver reads and writes; every revisioned kind has them.
pub trait RevisionedStatus: SourcesStatus + Clone + Default + PartialEq + serde::Serialize {
    fn observed_generation_mut(&mut self) -> &mut Option<i64>;
    fn conditions_mut(&mut self) -> &mut Conditions;
    fn retry(&self) -> Option<&RetryState>;
    fn retry_mut(&mut self) -> &mut Option<RetryState>;
    fn progress_mut(&mut self) -> &mut Option<Progress>;
    fn last_job(&self) -> Option<&JobRecord>;
    fn last_job_mut(&mut self) -> &mut Option<JobRecord>;
    /// The active revision's id, when one is active.
    fn active_revision_id(&self) -> Option<&str>;
    /// The `Indexed`/`Trained` message about the active revision (empty without one).
    fn active_message(&self) -> String;
    /// Every stored location the status lists (active and retained revisions).
    fn locations(&self) -> Vec<String>;
}

/// The Job the driver creates, and the ConfigMap it reads (applied first), when it has one.
pub struct BuiltJob {
    pub job: Job,
    pub config: Option<ConfigMap>,
}

/// What a revisioned kind brings to the driver.
pub trait Revisioned: Stored + Send + Sync + 'static {
    type Status: RevisionedStatus + Send + Sync;
    /// What a revision is computed from, and its id (`revision_id`).
    type Target: Clone + Send + Sync;
    /// What a successful Job reports.
    type Result: Clone + std::fmt::Debug + PartialEq + Send + Sync;

    const WORDS: Words;

    fn status(&self) -> Option<&Self::Status>;
    /// `spec.sources` of a Corpus, `spec.dataset` of an Adapter.
    fn sources(&self) -> &[DataSource];
    fn refresh_interval(&self) -> Option<&str>;
    /// The revision the inputs make; an error names the field at fault.
    fn target(&self, config_maps: &ConfigMaps, digests: &RemoteDigests) -> Result<Self::Target>;
    fn revision_id(target: &Self::Target) -> &str;
    fn job_name(name: &str, target: &Self::Target) -> String;
    /// Whether the active revision was built from exactly this target.
    fn is_active(status: &Self::Status, target: &Self::Target, job_name: &str) -> bool;
    fn build_job(
        &self,
        ctx: &Context,
        target: &Self::Target,
        current: &Self::Status,
        config_maps: &ConfigMaps,
    ) -> Result<BuiltJob>;
    /// The result of a succeeded Job from its termination message: `Ok(Err(..))` when the Job
    /// reported a failure or its result does not hold what a revision needs.
    fn read_result(
        &self,
        message: &str,
        target: &Self::Target,
    ) -> Result<std::result::Result<Self::Result, String>>;
    /// The runtime's own failure message in a failed Job's termination message, when it wrote one.
    fn failure_detail(message: &str) -> Option<String>;
    /// Records the target's ids in the status (the content revision, the dataset digest).
    fn record_target(status: &mut Self::Status, target: &Self::Target);
    /// Makes the result the active revision (the previous one joins the history); returns the
    /// run's details for the Event.
    fn promote(
        &self,
        status: &mut Self::Status,
        result: &Self::Result,
        target: &Self::Target,
        job_name: &str,
        created_at: Time,
    ) -> String;
}

/// Names in `spec.sources`/`spec.dataset` a ConfigMap event is relevant to.
pub fn references_config_map<K: Revisioned>(obj: &K, name: &str) -> bool {
    obj.sources()
        .iter()
        .any(|s| s.config_map.as_ref().is_some_and(|c| c.name == name))
}

/// Runs the controller of `K`: its objects, its Jobs and the ConfigMaps they name trigger it.
pub async fn run<K>(ctx: Arc<Context>, objects: Feed<K>, config_maps: Feed<ConfigMap>)
where
    K: Revisioned + std::fmt::Debug,
{
    crate::cluster::caches::run_owner_controller(
        ctx,
        K::WORDS.kind,
        K::OWNER_LABEL,
        objects,
        config_maps,
        references_config_map::<K>,
        reconcile::<K>,
    )
    .await;
}

async fn reconcile<K>(obj: Arc<K>, ctx: Arc<Context>, caches: OwnerCaches) -> Result<Action>
where
    K: Revisioned + std::fmt::Debug,
{
    caches.ready().await;
    let words = K::WORDS;
    let _timer = ctx.metrics.reconcile_timer(words.kind);
    let ns = namespace_of(&*obj)?;
    let name = name_of(&*obj)?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let current = obj.status().cloned().unwrap_or_default();
    let now = crate::status::now();
    if stored::is_finalizing(&*obj) {
        return stored::finalize(&ctx, &api, &*obj).await;
    }
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let stall = |e: Error| {
        let (ctx, api, obj, current, now) = (&ctx, &api, &obj, &current, &now);
        async move { stall(ctx, api, &**obj, current, &e, now).await }
    };

    // Validate, then resolve: the ConfigMaps, HTTP bodies and scan digest the revision is made of.
    let config_maps = read_config_maps(&caches, &ns, obj.sources());
    let resolved = match refresh_interval(obj.refresh_interval()) {
        Ok(refresh) => {
            check_remote_sources(
                &ctx,
                &caches,
                &*obj,
                &words.scan,
                obj.sources(),
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
        Err(e) if !e.is_transient() => return stall(e).await,
        Err(e) => return Err(e),
    };
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let refresh_wait = || ctx.refresh.wait(&uid, std::time::Instant::now());
    let generation = obj.meta().generation;

    let Some(digests) = remote.digests.clone() else {
        // The revision cannot be known before the scan or the first fetch: say why, and wait.
        let (reason, message) = remote
            .pending
            .clone()
            .unwrap_or((reasons::SOURCE_UNREADABLE, words.unchecked.to_owned()));
        let mut status = current.clone();
        *status.observed_generation_mut() = generation;
        remote.apply_to(&mut status, generation, &now);
        let health = Health::reconciling(reason, message.clone());
        set_health(status.conditions_mut(), &health, generation, &now);
        let conditions = status.conditions_mut();
        set_condition(
            conditions,
            words.condition,
            false,
            reason,
            &message,
            generation,
            &now,
        );
        record::<K>(&ctx, &ns, &name, &status, &now);
        if apply_status(&api, &*obj, obj.status(), &status).await?
            && let Some((reason, note)) = remote.event.clone()
        {
            ctx.event(&*obj, true, reason, "CheckSources", note).await;
        }
        let wait = refresh_wait().unwrap_or(jobs::RUNNING_POLL);
        return Ok(Action::requeue(if remote.scan_running {
            wait.min(jobs::RUNNING_POLL)
        } else {
            wait
        }));
    };
    let target = match obj.target(&config_maps, &digests) {
        Ok(t) => t,
        Err(e) if !e.is_transient() => return stall(e).await,
        Err(e) => return Err(e),
    };
    let revision = K::revision_id(&target);

    let job_name = K::job_name(&name, &target);
    let observed = observe(&ctx, &caches, &ns, &*obj, &job_name, &target).await?;
    let wanted = Wanted {
        revision,
        job_name: &job_name,
        active_matches: K::is_active(&current, &target, &job_name),
        retry: current.retry(),
        last_job: current.last_job(),
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

    // None: wait for a change (a watch event, or the next source check when one is planned).
    let mut requeue = Some(RESYNC);
    let mut started = created;
    match &decision {
        Decision::CreateJob => {
            let built = match obj.build_job(&ctx, &target, &current, &config_maps) {
                Ok(b) => b,
                Err(e) if !e.is_transient() => return stall(e).await,
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
            let (job, created) = job_api::create_if_absent(&jobs_api, &built.job).await?;
            started = job.metadata.creation_timestamp.clone();
            if created {
                ctx.metrics.job_started(words.command);
                ctx.event(
                    &*obj,
                    false,
                    words.building,
                    words.create_action,
                    format!(
                        "{} {job_name} started for {} {revision}",
                        words.job, words.started_for
                    ),
                )
                .await;
            }
            requeue = Some(jobs::RUNNING_POLL);
        }
        Decision::Running { .. } => requeue = Some(jobs::RUNNING_POLL),
        Decision::DeleteCountedFailure => {
            job_api::delete(&jobs_api, &job_name).await?;
            requeue = Some(wait_until(
                current.retry().and_then(|r| r.next_attempt_at.as_ref()),
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
        &*obj, &current, &target, &job_name, &decision, started, finished, &now,
    );
    remote.apply_to(&mut status, generation, &now);
    // Stored revisions: guarded by the finalizer; those leaving the history are deleted.
    stored::track(
        &ctx,
        &api,
        &*obj,
        &current.locations(),
        &status.locations(),
        matches!(
            decision,
            Decision::CreateJob | Decision::Running { .. } | Decision::Succeeded(_)
        ),
    )
    .await?;
    record::<K>(&ctx, &ns, &name, &status, &now);
    if apply_status(&api, &*obj, obj.status(), &status).await? {
        // Written once per finished Job: the status records it, so the next reconcile is a no-op.
        match &decision {
            Decision::Succeeded(_) => ctx.metrics.job_finished(words.command, true, &ns, &name),
            Decision::Failed { .. } => ctx.metrics.job_finished(words.command, false, &ns, &name),
            _ => {}
        }
        if let Some((warning, reason, note)) = event {
            ctx.event(&*obj, warning, reason, "Reconcile", note).await;
        }
        if let Some((reason, note)) = remote.event.clone() {
            ctx.event(&*obj, true, reason, "CheckSources", note).await;
        }
    }
    // Only once the failure is recorded (with the Job's creation time, so it is never counted
    // twice) is the Job deleted, making room for the retry under the same name. A Job stuck past
    // its bound is deleted even when no retry follows: it would otherwise wait for its deadline.
    match &decision {
        Decision::Failed { .. } if abandoned => job_api::delete(&jobs_api, &job_name).await?,
        Decision::Failed {
            next_attempt_at: Some(_),
            ..
        } => job_api::delete(&jobs_api, &job_name).await?,
        Decision::Succeeded(_) => {
            let owned = caches.owned_jobs(&ns, K::OWNER_LABEL, &name);
            for stale in jobs::stale_jobs(&owned, &job_name) {
                job_api::delete(&jobs_api, &stale).await?;
            }
        }
        _ => {}
    }
    // A planned source check comes sooner than the resync (or than waiting for a change): a
    // changed source is also what ends a spent retry budget.
    let requeue = match (requeue, refresh_wait()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(requeue.map_or_else(Action::await_change, |wait| {
        Action::requeue(wait.max(Duration::from_secs(1)))
    }))
}

/// `spec.refreshInterval`, parsed; a malformed one is an invalid spec naming the field.
pub fn refresh_interval(text: Option<&str>) -> Result<Option<Duration>> {
    text.map(parse_refresh_interval)
        .transpose()
        .map_err(Error::InvalidSpec)
}

/// Stalled with the error's reason until the spec or a watched object changes.
async fn stall<K: Revisioned>(
    ctx: &Context,
    api: &Api<K>,
    obj: &K,
    current: &K::Status,
    e: &Error,
    now: &Time,
) -> Result<Action> {
    let ns = namespace_of(obj)?;
    let name = name_of(obj)?;
    let status = stalled::<K>(obj.meta().generation, current, e, now);
    record::<K>(ctx, &ns, &name, &status, now);
    if apply_status(api, obj, obj.status(), &status).await? {
        ctx.event(obj, true, e.label(), "Reconcile", e.to_string())
            .await;
    }
    Ok(Action::await_change())
}

/// The status of an object whose spec can never work as it is.
pub fn stalled<K: Revisioned>(
    generation: Option<i64>,
    current: &K::Status,
    e: &Error,
    now: &Time,
) -> K::Status {
    let mut status = current.clone();
    *status.observed_generation_mut() = generation;
    let health = Health::stalled(e.label(), e.to_string());
    set_health(status.conditions_mut(), &health, generation, now);
    set_condition(
        status.conditions_mut(),
        K::WORDS.condition,
        false,
        e.label(),
        &e.to_string(),
        generation,
        now,
    );
    status
}

/// The alerts' per-object gauges (stalled, revision stale) from the status being written.
fn record<K: Revisioned>(ctx: &Context, ns: &str, name: &str, status: &K::Status, now: &Time) {
    ctx.metrics.record_status(
        K::WORDS.kind,
        ns,
        name,
        status.conditions(),
        Some(K::WORDS.condition),
        now,
    );
}

/// An Event worth publishing when the status is written: (warning, reason, message).
pub type StatusEvent = Option<(bool, &'static str, String)>;

/// The status the decision leads to, and the Event worth publishing if it is written.
#[allow(clippy::too_many_arguments)]
pub fn next_status<K: Revisioned>(
    obj: &K,
    current: &K::Status,
    target: &K::Target,
    job_name: &str,
    decision: &Decision<K::Result>,
    started: Option<Time>,
    finished: Option<Time>,
    now: &Time,
) -> (K::Status, StatusEvent) {
    let words = K::WORDS;
    let generation = obj.meta().generation;
    let revision = K::revision_id(target);
    let mut status = current.clone();
    *status.observed_generation_mut() = generation;
    K::record_target(&mut status, target);
    let mut event = None;
    let active = match status.active_revision_id() {
        Some(id) => format!("revision {id} stays active"),
        None => "no revision is active yet".to_owned(),
    };
    let running =
        |started: Option<Time>| jobs::record(job_name, revision, "Running", started, None, None);
    let (health, built) = match decision {
        Decision::UpToDate => {
            *status.retry_mut() = None;
            *status.progress_mut() = None;
            let msg = status.active_message();
            (
                Health::ready(reasons::SUCCEEDED, msg.clone()),
                (true, reasons::SUCCEEDED, msg),
            )
        }
        Decision::Running { stuck: Some(stuck) } => {
            *status.last_job_mut() = Some(running(started));
            let msg = format!(
                "{} {job_name} for {} {revision} is stuck: {}; {active}; after {} in {} the Job is stopped and counts as a failed attempt",
                words.job,
                words.revision,
                stuck.message,
                crate::stuck::human(stuck.bound()),
                stuck.reason
            );
            // Once per stuck state: the status keeps its reason while the pod stays so.
            if crate::status::find(current.conditions(), words.condition)
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
            *status.last_job_mut() = Some(running(started));
            let msg = format!(
                "{} {job_name} {} {revision}; {active}",
                words.job, words.builds
            );
            (
                Health::reconciling(words.building, msg.clone()),
                (false, words.building, msg),
            )
        }
        Decision::Succeeded(result) => {
            let created_at = finished.clone().unwrap_or_else(|| now.clone());
            let details = obj.promote(&mut status, result, target, job_name, created_at);
            *status.retry_mut() = None;
            *status.progress_mut() = None;
            *status.last_job_mut() = Some(jobs::record(
                job_name,
                revision,
                "Succeeded",
                started,
                finished,
                None,
            ));
            // The condition message is the one later passes derive again, so the next
            // reconcile writes nothing; the Event carries the run's details.
            let msg = status.active_message();
            event = Some((false, reasons::SUCCEEDED, format!("{msg} ({details})")));
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
            *status.last_job_mut() = Some(jobs::record(
                job_name,
                revision,
                "Failed",
                started,
                finished,
                Some(message.clone()),
            ));
            *status.retry_mut() = Some(RetryState {
                revision: revision.to_owned(),
                failures: *failures,
                next_attempt_at: next_attempt_at.clone(),
            });
            failure_health(
                &words,
                &mut event,
                *failures,
                message,
                &active,
                next_attempt_at.is_some(),
            )
        }
        Decision::DeleteCountedFailure | Decision::WaitForRetry { .. } | Decision::Exhausted => {
            let failures = status.retry().map_or(0, |r| r.failures);
            let message = status
                .last_job()
                .and_then(|j| j.message.clone())
                .unwrap_or_default();
            let retrying = !matches!(decision, Decision::Exhausted);
            let mut no_event = None;
            failure_health(&words, &mut no_event, failures, &message, &active, retrying)
        }
    };
    set_health(status.conditions_mut(), &health, generation, now);
    set_condition(
        status.conditions_mut(),
        words.condition,
        built.0,
        built.1,
        &built.2,
        generation,
        now,
    );
    (status, event)
}

fn failure_health(
    words: &Words,
    event: &mut StatusEvent,
    failures: i32,
    message: &str,
    active: &str,
    retrying: bool,
) -> (Health, (bool, &'static str, String)) {
    if retrying {
        let msg = format!(
            "{} failed ({failures}/{} attempts): {message}; {active}, retrying with backoff",
            words.job,
            jobs::MAX_ATTEMPTS
        );
        *event = Some((true, reasons::JOB_FAILED, msg.clone()));
        (
            Health::reconciling(reasons::JOB_FAILED, msg.clone()),
            (false, reasons::JOB_FAILED, msg),
        )
    } else {
        let msg = format!(
            "{} failed {failures} times, last: {message}; {active}. Fix the {} or spec to try a new revision",
            words.job, words.inputs
        );
        *event = Some((true, reasons::RETRY_BUDGET_EXHAUSTED, msg.clone()));
        (
            Health::stalled(reasons::RETRY_BUDGET_EXHAUSTED, msg.clone()),
            (false, reasons::RETRY_BUDGET_EXHAUSTED, msg),
        )
    }
}

fn read_config_maps(caches: &OwnerCaches, ns: &str, sources: &[DataSource]) -> ConfigMaps {
    sources
        .iter()
        .filter_map(|s| s.config_map.as_ref())
        .filter_map(|source| {
            let cm = caches.config_map(ns, &source.name)?;
            Some((source.name.clone(), (*cm).clone()))
        })
        .collect()
}

/// What the cluster shows of the Job for the wanted revision.
async fn observe<K: Revisioned>(
    ctx: &Context,
    caches: &OwnerCaches,
    ns: &str,
    obj: &K,
    job_name: &str,
    target: &K::Target,
) -> Result<Observed<K::Result>> {
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
    let command = K::WORDS.command;
    let state = caches
        .terminated(&ctx.client, ns, job_name, command)
        .await?;
    let outcome = match phase {
        jobs::JobPhase::Succeeded => {
            let message = state.and_then(|t| t.message).unwrap_or_default();
            obj.read_result(&message, target)?
        }
        _ => Err(jobs::job_failure_message(
            &*job,
            Duration::from_secs(K::WORDS.deadline_seconds as u64),
            state.as_ref(),
            command,
            // FallbackToLogsOnError: a crash leaves the log tail instead of JSON.
            K::failure_detail,
        )),
    };
    Ok(Observed::Finished {
        created,
        finished,
        outcome,
    })
}

/// Time until `until` (at least a second), or the first backoff when there is no time.
pub fn wait_until(until: Option<&Time>, now: &Time) -> Duration {
    match until {
        Some(until) => {
            let wait = until.0.duration_since(now.0).as_secs().max(1);
            Duration::from_secs(wait as u64)
        }
        None => jobs::BASE_BACKOFF,
    }
}
