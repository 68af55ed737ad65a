//! Corpus controller: content revision → index Job → active index revision.

use crate::build::index_job::{INDEX_DEADLINE_SECONDS, IndexJobInputs, index_job, index_job_name};
use crate::build::job_result::{IndexResult, parse_index_report};
use crate::build::revision::{ConfigMaps, corpus_content_revision};
use crate::build::scan_job;
use crate::build::{name_of, namespace_of};
use crate::cache::{Feed, OwnerCaches};
use crate::context::{Context, RESYNC};
use crate::error::{Error, Result};
use crate::jobs::{self, Decision, Observed, Wanted};
use crate::sources::{check_remote_sources, parse_refresh_interval};
use crate::status::{Health, apply_status, set_condition, set_health};
use hybrid_crds::conditions::{reasons, types};
use hybrid_crds::corpus::IndexRevision;
use hybrid_crds::{Corpus, CorpusStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::runtime::controller::Action;
use std::sync::Arc;

pub const KIND: &str = "Corpus";

/// `corpora`: the Corpus cache and watch, shared with the HybridModel controller; `config_maps`:
/// the source ConfigMaps ([`cache::source_config_maps`]).
pub async fn run(ctx: Arc<Context>, corpora: Feed<Corpus>, config_maps: Feed<ConfigMap>) {
    crate::cache::run_owner_controller(
        ctx,
        KIND,
        crate::build::LABEL_CORPUS,
        corpora,
        config_maps,
        references_config_map,
        reconcile,
    )
    .await;
}

pub fn references_config_map(corpus: &Corpus, name: &str) -> bool {
    corpus
        .spec
        .sources
        .iter()
        .any(|s| s.config_map.as_ref().is_some_and(|c| c.name == name))
}

async fn reconcile(corpus: Arc<Corpus>, ctx: Arc<Context>, caches: OwnerCaches) -> Result<Action> {
    caches.ready().await;
    let _timer = ctx.metrics.reconcile_timer(KIND);
    let ns = namespace_of(&*corpus)?;
    let name = name_of(&*corpus)?;
    let corpora: Api<Corpus> = Api::namespaced(ctx.client.clone(), &ns);
    let current = corpus.status.clone().unwrap_or_default();
    let now = crate::status::now();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    if crate::prune::is_finalizing(&*corpus) {
        return crate::prune::finalize(&ctx, &corpora, &*corpus).await;
    }

    // Validate, then resolve: the ConfigMaps, HTTP bodies and scan digest that make up the
    // content revision.
    let config_maps = read_config_maps(&caches, &ns, &corpus);
    let resolved = match refresh_interval(&corpus.spec) {
        Ok(refresh) => {
            check_remote_sources(
                &ctx,
                &caches,
                &*corpus,
                &scan_job::CORPUS,
                &corpus.spec.sources,
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
            return stall(&ctx, &corpora, &corpus, &current, &e, &now).await;
        }
        Err(e) => return Err(e),
    };
    let uid = corpus.metadata.uid.clone().unwrap_or_default();
    let refresh_wait = || ctx.refresh.wait(&uid, std::time::Instant::now());

    let Some(digests) = remote.digests.clone() else {
        // The revision cannot be known before the scan or the first fetch: say why, and wait.
        let (reason, message) = remote.pending.clone().unwrap_or((
            reasons::SOURCE_UNREADABLE,
            "sources not checked yet".to_owned(),
        ));
        let mut status = current.clone();
        status.observed_generation = corpus.metadata.generation;
        remote.apply_to(&mut status, corpus.metadata.generation, &now);
        let health = Health::reconciling(reason, message.clone());
        set_health(
            &mut status.conditions,
            &health,
            corpus.metadata.generation,
            &now,
        );
        set_condition(
            &mut status.conditions,
            types::INDEXED,
            false,
            reason,
            &message,
            corpus.metadata.generation,
            &now,
        );
        record(&ctx, &ns, &name, &status, &now);
        if apply_status(&corpora, &*corpus, corpus.status.as_ref(), &status).await?
            && let Some((reason, note)) = remote.event.clone()
        {
            ctx.event(&*corpus, true, reason, "CheckSources", note)
                .await;
        }
        let wait = refresh_wait().unwrap_or(jobs::RUNNING_POLL);
        return Ok(Action::requeue(if remote.scan_running {
            wait.min(jobs::RUNNING_POLL)
        } else {
            wait
        }));
    };
    let content_revision = match corpus_content_revision(&corpus.spec, &config_maps, &digests) {
        Ok(r) => r,
        Err(e) if !e.is_transient() => {
            return stall(&ctx, &corpora, &corpus, &current, &e, &now).await;
        }
        Err(e) => return Err(e),
    };

    let job_name = index_job_name(&name, &content_revision);
    let observed = observe(&ctx, &caches, &ns, &job_name).await?;
    let wanted = Wanted {
        revision: &content_revision,
        job_name: &job_name,
        active_matches: current
            .active_revision
            .as_ref()
            .is_some_and(|a| a.content_revision == content_revision),
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

    // None: wait for a change (a watch event, or the next source check when one is planned).
    let mut requeue = Some(RESYNC);
    let mut started = created;
    match &decision {
        Decision::CreateJob => {
            let previous = current
                .active_revision
                .as_ref()
                .map(|a| a.location.as_str());
            let job = match index_job(
                &corpus,
                &IndexJobInputs {
                    content_revision: &content_revision,
                    runtime_images: ctx.settings.runtime_images(),
                    previous_location: previous,
                },
            ) {
                Ok(job) => job,
                Err(e) if !e.is_transient() => {
                    return stall(&ctx, &corpora, &corpus, &current, &e, &now).await;
                }
                Err(e) => return Err(e),
            };
            let (job, created) = jobs::create_if_absent(&jobs_api, &job).await?;
            started = job.metadata.creation_timestamp.clone();
            if created {
                ctx.metrics.job_started("index");
                ctx.event(
                    &*corpus,
                    false,
                    reasons::INDEXING,
                    "CreateIndexJob",
                    format!("index Job {job_name} started for content revision {content_revision}"),
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
        &corpus,
        &current,
        &content_revision,
        &job_name,
        &decision,
        started,
        finished,
        &now,
    );
    remote.apply_to(&mut status, corpus.metadata.generation, &now);
    // Stored revisions: guarded by the finalizer; those leaving the history are deleted.
    crate::prune::track(
        &ctx,
        &corpora,
        &*corpus,
        &crate::prune::corpus_locations(&current),
        &crate::prune::corpus_locations(&status),
        matches!(
            decision,
            Decision::CreateJob | Decision::Running { .. } | Decision::Succeeded(_)
        ),
    )
    .await?;
    record(&ctx, &ns, &name, &status, &now);
    if apply_status(&corpora, &*corpus, corpus.status.as_ref(), &status).await? {
        // Written once per finished Job: the status records it, so the next reconcile is a no-op.
        match &decision {
            Decision::Succeeded(_) => ctx.metrics.job_finished("index", true, &ns, &name),
            Decision::Failed { .. } => ctx.metrics.job_finished("index", false, &ns, &name),
            _ => {}
        }
        if let Some((warning, reason, note)) = event {
            ctx.event(&*corpus, warning, reason, "Reconcile", note)
                .await;
        }
        if let Some((reason, note)) = remote.event.clone() {
            ctx.event(&*corpus, true, reason, "CheckSources", note)
                .await;
        }
    }
    // Only once the failure is recorded (with the Job's creation time, so it is never counted
    // twice) is the Job deleted, making room for the retry under the same name. A Job stuck past
    // its bound is deleted even when no retry follows: it would otherwise wait for its deadline.
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
                crate::build::LABEL_CORPUS,
                &name,
                &job_name,
            )
            .await?
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
        Action::requeue(wait.max(std::time::Duration::from_secs(1)))
    }))
}

/// `spec.refreshInterval`, parsed; a malformed one is an invalid spec naming the field.
fn refresh_interval(spec: &hybrid_crds::CorpusSpec) -> Result<Option<std::time::Duration>> {
    spec.refresh_interval
        .as_deref()
        .map(parse_refresh_interval)
        .transpose()
        .map_err(Error::InvalidSpec)
}

/// Stalled with the error's reason until the spec or a watched object changes.
async fn stall(
    ctx: &Context,
    corpora: &Api<Corpus>,
    corpus: &Corpus,
    current: &CorpusStatus,
    e: &Error,
    now: &Time,
) -> Result<Action> {
    let ns = namespace_of(corpus)?;
    let name = name_of(corpus)?;
    let status = stalled(corpus, current, e, now);
    record(ctx, &ns, &name, &status, now);
    if apply_status(corpora, corpus, corpus.status.as_ref(), &status).await? {
        ctx.event(corpus, true, e.label(), "Reconcile", e.to_string())
            .await;
    }
    Ok(Action::await_change())
}

/// The alerts' per-object gauges (stalled, revision stale) from the status being written.
fn record(ctx: &Context, ns: &str, name: &str, status: &CorpusStatus, now: &Time) {
    ctx.metrics.record_status(
        KIND,
        ns,
        name,
        &status.conditions,
        Some(types::INDEXED),
        now,
    );
}

/// The status the decision leads to, and the Event worth publishing if it is written.
#[allow(clippy::too_many_arguments)]
pub fn next_status(
    corpus: &Corpus,
    current: &CorpusStatus,
    content_revision: &str,
    job_name: &str,
    decision: &Decision<IndexResult>,
    started: Option<Time>,
    finished: Option<Time>,
    now: &Time,
) -> (CorpusStatus, Option<(bool, &'static str, String)>) {
    let generation = corpus.metadata.generation;
    let mut status = current.clone();
    status.observed_generation = generation;
    status.content_revision = Some(content_revision.to_owned());
    let mut event = None;
    let active = match &status.active_revision {
        Some(a) => format!("revision {} stays active", a.revision),
        None => "no revision is active yet".to_owned(),
    };
    let (health, indexed) = match decision {
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
                job_name,
                content_revision,
                "Running",
                started,
                None,
                None,
            ));
            let msg = format!(
                "index Job {job_name} for content revision {content_revision} is stuck: {}; {active}; after {} in {} the Job is stopped and counts as a failed attempt",
                stuck.message,
                crate::stuck::human(stuck.bound()),
                stuck.reason
            );
            // Once per stuck state: the status keeps its reason while the pod stays so.
            if crate::status::find(&current.conditions, types::INDEXED)
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
                job_name,
                content_revision,
                "Running",
                started,
                None,
                None,
            ));
            let msg = format!(
                "index Job {job_name} builds content revision {content_revision}; {active}"
            );
            (
                Health::reconciling(reasons::INDEXING, msg.clone()),
                (false, reasons::INDEXING, msg),
            )
        }
        Decision::Succeeded(result) => {
            let revision = IndexRevision {
                revision: result.revision.clone(),
                content_revision: content_revision.to_owned(),
                location: result.location.clone(),
                documents: result.documents as i64,
                chunks: result.chunks as i64,
                job: Some(job_name.to_owned()),
                created_at: finished.clone().or_else(|| Some(now.clone())),
            };
            if let Some(previous) = status.active_revision.replace(revision) {
                status.previous_revisions.insert(0, previous);
            }
            status
                .previous_revisions
                .truncate(corpus.spec.retain_revisions.max(0) as usize);
            status.retry = None;
            status.progress = None;
            status.last_job = Some(jobs::record(
                job_name,
                content_revision,
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
                    "{msg} ({} chunks reused, {} embedded)",
                    result.reused, result.reembedded
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
                content_revision,
                "Failed",
                started,
                finished,
                Some(message.clone()),
            ));
            status.retry = Some(hybrid_crds::common::RetryState {
                revision: content_revision.to_owned(),
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
            let failures = status.retry.as_ref().map_or(0, |r| r.failures);
            let message = status
                .last_job
                .as_ref()
                .and_then(|j| j.message.clone())
                .unwrap_or_default();
            let retrying = !matches!(decision, Decision::Exhausted);
            let mut no_event = None;
            failure_health(&mut no_event, failures, &message, &active, retrying)
        }
    };
    set_health(&mut status.conditions, &health, generation, now);
    set_condition(
        &mut status.conditions,
        types::INDEXED,
        indexed.0,
        indexed.1,
        &indexed.2,
        generation,
        now,
    );
    (status, event)
}

fn active_message(active: &IndexRevision) -> String {
    format!(
        "index revision {} is active: {} documents, {} chunks",
        active.revision, active.documents, active.chunks
    )
}

fn failure_health(
    event: &mut Option<(bool, &'static str, String)>,
    failures: i32,
    message: &str,
    active: &str,
    retrying: bool,
) -> (Health, (bool, &'static str, String)) {
    if retrying {
        let msg = format!(
            "index Job failed ({failures}/{} attempts): {message}; {active}, retrying with backoff",
            jobs::MAX_ATTEMPTS
        );
        *event = Some((true, reasons::JOB_FAILED, msg.clone()));
        (
            Health::reconciling(reasons::JOB_FAILED, msg.clone()),
            (false, reasons::JOB_FAILED, msg),
        )
    } else {
        let msg = format!(
            "index Job failed {failures} times, last: {message}; {active}. Fix the sources or spec to try a new revision"
        );
        *event = Some((true, reasons::RETRY_BUDGET_EXHAUSTED, msg.clone()));
        (
            Health::stalled(reasons::RETRY_BUDGET_EXHAUSTED, msg.clone()),
            (false, reasons::RETRY_BUDGET_EXHAUSTED, msg),
        )
    }
}

fn stalled(corpus: &Corpus, current: &CorpusStatus, e: &Error, now: &Time) -> CorpusStatus {
    let mut status = current.clone();
    let generation = corpus.metadata.generation;
    status.observed_generation = generation;
    let health = Health::stalled(e.label(), e.to_string());
    set_health(&mut status.conditions, &health, generation, now);
    set_condition(
        &mut status.conditions,
        types::INDEXED,
        false,
        e.label(),
        &e.to_string(),
        generation,
        now,
    );
    status
}

fn read_config_maps(caches: &OwnerCaches, ns: &str, corpus: &Corpus) -> ConfigMaps {
    (corpus.spec.sources.iter())
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
    job_name: &str,
) -> Result<Observed<IndexResult>> {
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
        .terminated(&ctx.client, ns, job_name, "index")
        .await?;
    let outcome = match phase {
        jobs::JobPhase::Succeeded => {
            let message = state.and_then(|t| t.message).unwrap_or_default();
            match parse_index_report(&message) {
                Ok(Ok(result)) => Ok(result),
                Ok(Err(failure)) => Err(failure.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
        _ => Err(jobs::job_failure_message(
            &*job,
            std::time::Duration::from_secs(INDEX_DEADLINE_SECONDS as u64),
            state.as_ref(),
            "index",
            |m| match parse_index_report(m) {
                Ok(Err(failure)) => Some(failure.to_string()),
                // FallbackToLogsOnError: a crash leaves the log tail instead of JSON.
                _ => None,
            },
        )),
    };
    Ok(Observed::Finished {
        created,
        finished,
        outcome,
    })
}

/// Time until `until` (at least a second), or the first backoff when there is no time.
fn wait_until(until: Option<&Time>, now: &Time) -> std::time::Duration {
    match until {
        Some(until) => {
            let wait = until.0.duration_since(now.0).as_secs().max(1);
            std::time::Duration::from_secs(wait as u64)
        }
        None => jobs::BASE_BACKOFF,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{FINANCE_CORPUS, corpus};
    use crate::status::is_true;

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("ts"))
    }

    fn result(rev: &str) -> IndexResult {
        IndexResult {
            revision: rev.into(),
            documents: 10,
            chunks: 100,
            reused: 90,
            reembedded: 10,
            duration_seconds: 2.0,
            location: format!("/pvc/hybrid-artifacts/indexes/{rev}.tar.gz"),
        }
    }

    fn active(rev: &str, content: &str) -> IndexRevision {
        IndexRevision {
            revision: rev.into(),
            content_revision: content.into(),
            location: format!("/pvc/x/{rev}.tar.gz"),
            ..Default::default()
        }
    }

    #[test]
    fn success_promotes_and_keeps_retain_revisions_previous() {
        let c = corpus(FINANCE_CORPUS); // retainRevisions: 2
        let current = CorpusStatus {
            active_revision: Some(active("ix-3", "c3")),
            previous_revisions: vec![active("ix-2", "c2"), active("ix-1", "c1")],
            ..Default::default()
        };
        let (status, event) = next_status(
            &c,
            &current,
            "c4",
            "finance-notes-index-c4",
            &Decision::Succeeded(result("ix-4")),
            Some(t(1)),
            Some(t(9)),
            &t(10),
        );
        let a = status.active_revision.clone().expect("active");
        assert_eq!(
            (a.revision.as_str(), a.content_revision.as_str()),
            ("ix-4", "c4")
        );
        assert_eq!(a.documents, 10);
        let prev: Vec<_> = status
            .previous_revisions
            .iter()
            .map(|r| r.revision.as_str())
            .collect();
        assert_eq!(
            prev,
            ["ix-3", "ix-2"],
            "newest first, trimmed to retainRevisions"
        );
        assert!(is_true(&status.conditions, "Ready"));
        assert!(is_true(&status.conditions, "Indexed"));
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(status.last_job.clone().expect("job").outcome, "Succeeded");
        assert!(event.is_some());
        let (again, event) = next_status(
            &c,
            &status,
            "c4",
            "finance-notes-index-c4",
            &Decision::UpToDate,
            None,
            None,
            &t(20),
        );
        assert_eq!(again, status, "the pass after a promotion writes nothing");
        assert!(event.is_none());
    }

    #[test]
    fn failure_keeps_the_active_revision_and_records_the_message() {
        let c = corpus(FINANCE_CORPUS);
        let current = CorpusStatus {
            active_revision: Some(active("ix-3", "c3")),
            ..Default::default()
        };
        let (status, event) = next_status(
            &c,
            &current,
            "c4",
            "finance-notes-index-c4",
            &Decision::Failed {
                failures: 1,
                message: "EmptyCorpus: no text".into(),
                next_attempt_at: Some(t(40)),
            },
            Some(t(1)),
            Some(t(9)),
            &t(10),
        );
        assert_eq!(status.active_revision.expect("kept").revision, "ix-3");
        assert_eq!(
            status.last_job.expect("job").message.as_deref(),
            Some("EmptyCorpus: no text")
        );
        let retry = status.retry.expect("retry");
        assert_eq!((retry.revision.as_str(), retry.failures), ("c4", 1));
        assert!(is_true(&status.conditions, "Reconciling"));
        assert!(!is_true(&status.conditions, "Stalled"));
        let ready = crate::status::find(&status.conditions, "Ready").expect("ready");
        assert_eq!(ready.reason, "JobFailed");
        assert!(
            ready.message.contains("ix-3 stays active"),
            "{}",
            ready.message
        );
        assert_eq!(event.expect("event").1, "JobFailed");
    }

    fn stuck_pod() -> crate::stuck::Stuck {
        crate::stuck::Stuck {
            reason: "ImagePullBackOff",
            pod: "finance-notes-index-c4-x7".into(),
            message: "pod finance-notes-index-c4-x7 cannot pull image \"runtime:nope\": Back-off pulling image \"runtime:nope\"".into(),
            since: Some(k8s_openapi::jiff::Timestamp::from_second(1).expect("ts")),
        }
    }

    #[test]
    fn a_stuck_index_pod_shows_its_reason_once_and_the_active_revision_stays() {
        let c = corpus(FINANCE_CORPUS);
        let current = CorpusStatus {
            active_revision: Some(active("ix-3", "c3")),
            ..Default::default()
        };
        let running = |current: &CorpusStatus, stuck| {
            next_status(
                &c,
                current,
                "c4",
                "finance-notes-index-c4",
                &Decision::Running { stuck },
                Some(t(1)),
                None,
                &t(10),
            )
        };
        let (indexing, _) = running(&current, None);
        let (status, event) = running(&indexing, Some(stuck_pod()));
        assert_eq!(
            status.active_revision.clone().expect("kept").revision,
            "ix-3"
        );
        for type_ in ["Indexed", "Ready", "Reconciling"] {
            let c = crate::status::find(&status.conditions, type_).expect(type_);
            assert_eq!(c.reason, "ImagePullBackOff", "{type_}");
        }
        let indexed = crate::status::find(&status.conditions, "Indexed").expect("i");
        assert_eq!(
            indexed.message,
            "index Job finance-notes-index-c4 for content revision c4 is stuck: pod finance-notes-index-c4-x7 cannot pull image \"runtime:nope\": Back-off pulling image \"runtime:nope\"; revision ix-3 stays active; after 5m in ImagePullBackOff the Job is stopped and counts as a failed attempt"
        );
        let (warning, reason, note) = event.expect("an Event when it gets stuck");
        assert!(warning);
        assert_eq!(
            (reason, note.as_str()),
            ("ImagePullBackOff", indexed.message.as_str())
        );
        let (again, event) = running(&status, Some(stuck_pod()));
        assert_eq!(again, status, "still stuck: nothing to write");
        assert!(event.is_none(), "published once");
        // The pod starts: back to Indexing.
        let (unstuck, _) = running(&status, None);
        let ready = crate::status::find(&unstuck.conditions, "Ready").expect("r");
        assert_eq!(ready.reason, "Indexing");
    }

    #[test]
    fn spent_budget_is_stalled() {
        let c = corpus(FINANCE_CORPUS);
        let (status, _) = next_status(
            &c,
            &CorpusStatus::default(),
            "c4",
            "finance-notes-index-c4",
            &Decision::Failed {
                failures: 3,
                message: "boom".into(),
                next_attempt_at: None,
            },
            None,
            None,
            &t(10),
        );
        assert!(is_true(&status.conditions, "Stalled"));
        let stalled = crate::status::find(&status.conditions, "Stalled").expect("s");
        assert_eq!(stalled.reason, "RetryBudgetExhausted");
        assert!(
            stalled.message.contains("no revision is active yet"),
            "{}",
            stalled.message
        );
    }

    #[test]
    fn an_unchanged_corpus_gives_an_identical_status() {
        let c = corpus(FINANCE_CORPUS);
        let current = CorpusStatus {
            active_revision: Some(active("ix-3", "c3")),
            ..Default::default()
        };
        let (first, _) = next_status(
            &c,
            &current,
            "c3",
            "j",
            &Decision::UpToDate,
            None,
            None,
            &t(10),
        );
        let (second, event) = next_status(
            &c,
            &first,
            "c3",
            "j",
            &Decision::UpToDate,
            None,
            None,
            &t(20),
        );
        assert_eq!(first, second, "nothing to write on the second pass");
        assert!(event.is_none());
    }

    #[test]
    fn refresh_interval_errors_name_the_field() {
        let c = corpus(&FINANCE_CORPUS.replace(
            "retainRevisions: 2",
            "retainRevisions: 2\n  refreshInterval: 5s",
        ));
        let err = refresh_interval(&c.spec).expect_err("too short");
        assert_eq!(err.label(), "InvalidSpec");
        assert!(err.to_string().contains("spec.refreshInterval"), "{err}");
        let c = corpus(&FINANCE_CORPUS.replace(
            "retainRevisions: 2",
            "retainRevisions: 2\n  refreshInterval: 1h30m",
        ));
        assert_eq!(
            refresh_interval(&c.spec).expect("parses"),
            Some(std::time::Duration::from_secs(5400))
        );
        assert_eq!(
            refresh_interval(&corpus(FINANCE_CORPUS).spec).expect("unset"),
            None
        );
    }

    #[test]
    fn configmap_references_are_found() {
        let c = corpus(FINANCE_CORPUS);
        assert!(references_config_map(&c, "finance-corpus"));
        assert!(!references_config_map(&c, "filings"));
    }
}
