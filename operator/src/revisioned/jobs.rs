//! The Job-driven state machine shared by Corpus (index Jobs) and Adapter (training Jobs).
//!
//! unchanged revision → nothing; new revision → create its Job (deterministic name, created only
//! if absent); Job succeeded → promote its result; Job failed → keep the active revision, count
//! the failure, delete the Job and create it again after an exponential backoff; after
//! [`MAX_ATTEMPTS`] failures → Stalled until the revision changes. A Job whose pod is stuck
//! (`stuck::diagnose`) is reported as such while it waits, and once it has waited past the
//! bound of its state it counts as a failed attempt like any other (and is deleted).

use crate::cluster::cached_objects::{JobPod, JobState};

use crate::stuck::{Stuck, human, log_tail};
use hybrid_crds::common::{JobRecord, RetryState};
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::ContainerStateTerminated;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// Failed attempts at one revision before the resource is Stalled.
pub const MAX_ATTEMPTS: i32 = 3;
/// First retry delay; doubled after each failure.
pub const BASE_BACKOFF: Duration = Duration::from_secs(30);
/// Longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How often a running Job is looked at even without a watch event (progress, lost events).
pub const RUNNING_POLL: Duration = Duration::from_secs(30);

pub fn backoff(failures: i32) -> Duration {
    let exp = failures.saturating_sub(1).clamp(0, 16) as u32;
    BASE_BACKOFF
        .saturating_mul(2u32.saturating_pow(exp))
        .min(MAX_BACKOFF)
}

/// What the cluster shows of the Job for the wanted revision.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed<R> {
    Absent,
    Running {
        created: Option<Time>,
        /// Its newest pod makes no progress, and why.
        stuck: Option<Stuck>,
    },
    /// Finished; `Err` carries the failure message (runtime error, unreadable result, ...).
    Finished {
        created: Option<Time>,
        finished: Option<Time>,
        outcome: std::result::Result<R, String>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision<R> {
    /// The active revision was built from the wanted inputs.
    UpToDate,
    /// Create the Job now.
    CreateJob,
    /// A Job runs (or its pod is stuck, not for longer than its bound yet); wait for it.
    Running { stuck: Option<Stuck> },
    /// The Job succeeded with this result: promote it.
    Succeeded(R),
    /// A failure not counted yet. `next_attempt_at` is None when the budget is spent.
    Failed {
        failures: i32,
        message: String,
        next_attempt_at: Option<Time>,
    },
    /// The failed Job was already counted; delete it so the retry can create it again.
    DeleteCountedFailure,
    /// Back off until this time, then create the Job again.
    WaitForRetry { until: Time },
    /// The retry budget of this revision is spent.
    Exhausted,
}

pub struct Wanted<'a> {
    pub revision: &'a str,
    pub job_name: &'a str,
    /// Whether the active revision was built from exactly these inputs.
    pub active_matches: bool,
    pub retry: Option<&'a RetryState>,
    pub last_job: Option<&'a JobRecord>,
}

pub fn decide<R>(wanted: &Wanted<'_>, observed: Observed<R>, now: Timestamp) -> Decision<R> {
    if wanted.active_matches {
        return Decision::UpToDate;
    }
    let retry = wanted.retry.filter(|r| r.revision == wanted.revision);
    let failures = retry.map_or(0, |r| r.failures);
    match observed {
        Observed::Finished {
            outcome: Ok(result),
            ..
        } => Decision::Succeeded(result),
        Observed::Finished {
            created,
            outcome: Err(message),
            ..
        } => {
            let counted = wanted.last_job.is_some_and(|j| {
                j.name == wanted.job_name
                    && j.revision == wanted.revision
                    && j.outcome == "Failed"
                    && j.started_at == created
            });
            if counted {
                if failures >= MAX_ATTEMPTS {
                    Decision::Exhausted
                } else {
                    Decision::DeleteCountedFailure
                }
            } else {
                let failures = failures + 1;
                let delay = SignedDuration::from_secs(backoff(failures).as_secs() as i64);
                let next_attempt_at = (failures < MAX_ATTEMPTS)
                    .then(|| Time(now.saturating_add(delay).unwrap_or(Timestamp::MAX)));
                Decision::Failed {
                    failures,
                    message,
                    next_attempt_at,
                }
            }
        }
        Observed::Running {
            created,
            stuck: Some(stuck),
        } if stuck.past_bound(now) => decide(
            wanted,
            Observed::Finished {
                created,
                finished: None,
                outcome: Err(stuck_failure(&stuck)),
            },
            now,
        ),
        Observed::Running { stuck, .. } => Decision::Running { stuck },
        Observed::Absent => {
            if failures >= MAX_ATTEMPTS {
                Decision::Exhausted
            } else if let Some(until) = retry.and_then(|r| r.next_attempt_at.clone())
                && until.0 > now
            {
                Decision::WaitForRetry { until }
            } else {
                Decision::CreateJob
            }
        }
    }
}

/// The failure a Job stuck past its bound counts as.
pub fn stuck_failure(stuck: &Stuck) -> String {
    format!(
        "{} for more than {}: {}; the Job was stopped",
        stuck.reason,
        human(stuck.bound()),
        stuck.message
    )
}

/// Whether a running Job's pod is stuck past its bound: the Job then counts as failed, and is
/// deleted once that is recorded (it would otherwise wait until its deadline).
pub fn abandoned<R>(observed: &Observed<R>, now: Timestamp) -> bool {
    matches!(observed, Observed::Running { stuck: Some(s), .. } if s.past_bound(now))
}

/// Whether a Job finished, and how.
pub enum JobPhase {
    Running,
    Succeeded,
    Failed,
}

/// A Job as read: the whole object from the apiserver, or a cache's [`JobState`].
pub trait JobView {
    fn job_status(&self) -> Option<&JobStatus>;
}

impl JobView for Job {
    fn job_status(&self) -> Option<&JobStatus> {
        self.status.as_ref()
    }
}

impl JobView for JobState {
    fn job_status(&self) -> Option<&JobStatus> {
        self.status.as_ref()
    }
}

pub fn job_phase(job: &impl JobView) -> JobPhase {
    let status = job.job_status();
    let condition = |t: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == t && c.status == "True"))
    };
    if condition("Complete") || status.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        JobPhase::Succeeded
    } else if condition("Failed") {
        JobPhase::Failed
    } else {
        JobPhase::Running
    }
}

pub fn finished_at(job: &impl JobView) -> Option<Time> {
    let status = job.job_status()?;
    status.completion_time.clone().or_else(|| {
        status
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Failed" && c.status == "True")
            .and_then(|c| c.last_transition_time.clone())
    })
}

/// The label the Job controller puts on a Job's pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// The terminated state of `container` in the newest of a Job's `pods`.
pub fn newest_terminated<'a>(
    pods: impl Iterator<Item = &'a JobPod>,
    container: &str,
) -> Option<ContainerStateTerminated> {
    let newest = pods.max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    newest.and_then(|p| p.terminated(container)).cloned()
}

/// A failed Job's message: the pod's reason and exit code (`OOMKilled, exit code 137`), then
/// the runtime's own error (`parse` turns a result-contract error into text) or the log tail.
pub fn failure_message(
    state: Option<&ContainerStateTerminated>,
    what: &str,
    parse: impl Fn(&str) -> Option<String>,
) -> String {
    let message = state.and_then(|t| t.message.clone()).unwrap_or_default();
    let detail = if message.trim().is_empty() {
        format!("the {what} pod failed without a message")
    } else {
        parse(&message).unwrap_or_else(|| format!("last log lines: {}", log_tail(&message, 600)))
    };
    match state {
        Some(t) => format!(
            "pod terminated: {}, exit code {}: {detail}",
            t.reason.as_deref().unwrap_or("Error"),
            t.exit_code
        ),
        None => detail,
    }
}

/// The reason of a failed Job's `Failed` condition (`BackoffLimitExceeded`, `DeadlineExceeded`).
pub fn failed_reason(job: &impl JobView) -> Option<&str> {
    let conditions = job.job_status()?.conditions.as_ref()?;
    let failed = conditions
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")?;
    failed.reason.as_deref()
}

/// A failed Job's message ([`failure_message`]), led by the deadline when the Job controller
/// stopped it for running past its `activeDeadlineSeconds` (`deadline`): the pod it killed may
/// be gone, and "failed without a message" would hide why.
pub fn job_failure_message(
    job: &impl JobView,
    deadline: Duration,
    state: Option<&ContainerStateTerminated>,
    what: &str,
    parse: impl Fn(&str) -> Option<String>,
) -> String {
    if failed_reason(job) != Some(crate::stuck::reasons::DEADLINE_EXCEEDED) {
        return failure_message(state, what, parse);
    }
    let stopped = format!(
        "DeadlineExceeded: the {what} Job ran longer than its deadline of {} and was stopped",
        human(deadline)
    );
    match state {
        Some(_) => format!("{stopped}; {}", failure_message(state, what, parse)),
        None => stopped,
    }
}

/// Jobs of earlier revisions, to delete once a new revision is promoted: the Job that built the
/// active revision is kept (its pod holds the logs of the run being served), and so is any Job
/// still running, which may be a newer revision than the one just promoted.
pub fn stale_jobs(jobs: &[JobState], keep: &str) -> Vec<String> {
    jobs.iter()
        .filter(|j| j.metadata.name.as_deref() != Some(keep))
        .filter(|j| !matches!(job_phase(*j), JobPhase::Running))
        .filter_map(|j| j.metadata.name.clone())
        .collect()
}

/// The JobRecord of a Job in a given outcome.
pub fn record(
    name: &str,
    revision: &str,
    outcome: &str,
    started_at: Option<Time>,
    finished_at: Option<Time>,
    message: Option<String>,
) -> JobRecord {
    JobRecord {
        name: name.to_owned(),
        revision: revision.to_owned(),
        outcome: outcome.to_owned(),
        started_at,
        finished_at,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("ts"))
    }

    #[test]
    fn a_log_tail_in_a_failure_message_is_plain_text_and_keeps_the_end() {
        // What an OOM-killed index pod left as its termination message (FallbackToLogsOnError).
        let log = "\u{1b}[2m2026-12-03T14:04:49Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m index progress \
                   \u{1b}[3mphase\u{1b}[0m=Reading\n\n\u{1b}[32m INFO\u{1b}[0m read source documents=1\n";
        let killed = ContainerStateTerminated {
            reason: Some("OOMKilled".into()),
            exit_code: 137,
            message: Some(log.into()),
            ..Default::default()
        };
        let m = failure_message(Some(&killed), "index", |_| None);
        assert_eq!(
            m,
            "pod terminated: OOMKilled, exit code 137: last log lines: 2026-12-03T14:04:49Z  INFO \
             index progress phase=Reading | INFO read source documents=1"
        );
        let long = format!("{}END", "x".repeat(2000));
        let tail = log_tail(&long, 10);
        assert_eq!(tail, "…xxxxxxxEND");
    }

    #[test]
    fn failure_message_names_the_pod_reason_and_exit_code() {
        let killed = ContainerStateTerminated {
            reason: Some("OOMKilled".into()),
            exit_code: 137,
            ..Default::default()
        };
        let m = failure_message(Some(&killed), "train", |_| None);
        assert_eq!(
            m,
            "pod terminated: OOMKilled, exit code 137: the train pod failed without a message"
        );
        let with_error = ContainerStateTerminated {
            message: Some("{json}".into()),
            exit_code: 1,
            ..Default::default()
        };
        let m = failure_message(Some(&with_error), "index", |_| {
            Some("OutOfMemory: x".into())
        });
        assert_eq!(m, "pod terminated: Error, exit code 1: OutOfMemory: x");
        assert_eq!(
            failure_message(None, "index", |_| None),
            "the index pod failed without a message"
        );
    }

    fn wanted<'a>(retry: Option<&'a RetryState>, last: Option<&'a JobRecord>) -> Wanted<'a> {
        Wanted {
            revision: "rev2",
            job_name: "c-index-rev2",
            active_matches: false,
            retry,
            last_job: last,
        }
    }

    fn failed(created: i64) -> Observed<u32> {
        Observed::Finished {
            created: Some(t(created)),
            finished: Some(t(created + 5)),
            outcome: Err("EmptyCorpus: no text".into()),
        }
    }

    #[test]
    fn unchanged_revision_does_nothing_even_with_a_job_around() {
        let w = Wanted {
            active_matches: true,
            ..wanted(None, None)
        };
        assert_eq!(
            decide(&w, failed(1), Timestamp::UNIX_EPOCH),
            Decision::UpToDate
        );
        assert_eq!(
            decide::<u32>(&w, Observed::Absent, Timestamp::UNIX_EPOCH),
            Decision::UpToDate
        );
    }

    #[test]
    fn new_revision_creates_then_waits_then_promotes() {
        let w = wanted(None, None);
        let now = Timestamp::from_second(100).expect("ts");
        assert_eq!(
            decide::<u32>(&w, Observed::Absent, now),
            Decision::CreateJob
        );
        assert_eq!(
            decide::<u32>(
                &w,
                Observed::Running {
                    created: Some(t(90)),
                    stuck: None,
                },
                now
            ),
            Decision::Running { stuck: None }
        );
        let done = Observed::Finished {
            created: Some(t(90)),
            finished: Some(t(99)),
            outcome: Ok(7u32),
        };
        assert_eq!(decide(&w, done, now), Decision::Succeeded(7));
    }

    #[test]
    fn failures_back_off_exponentially_then_exhaust_the_budget() {
        let now = Timestamp::from_second(1000).expect("ts");
        // First failure.
        let d = decide(&wanted(None, None), failed(900), now);
        let Decision::Failed {
            failures,
            next_attempt_at,
            message,
        } = d
        else {
            panic!("expected a failure, got {d:?}");
        };
        assert_eq!((failures, message.as_str()), (1, "EmptyCorpus: no text"));
        assert_eq!(next_attempt_at, Some(t(1030)));

        // The same failed Job seen again is not counted twice.
        let retry = RetryState {
            revision: "rev2".into(),
            failures: 1,
            next_attempt_at: Some(t(1030)),
        };
        let last = record("c-index-rev2", "rev2", "Failed", Some(t(900)), None, None);
        assert_eq!(
            decide(&wanted(Some(&retry), Some(&last)), failed(900), now),
            Decision::DeleteCountedFailure
        );
        // Deleted, backoff pending: wait; after it: create again.
        assert_eq!(
            decide::<u32>(&wanted(Some(&retry), Some(&last)), Observed::Absent, now),
            Decision::WaitForRetry { until: t(1030) }
        );
        let later = Timestamp::from_second(1031).expect("ts");
        assert_eq!(
            decide::<u32>(&wanted(Some(&retry), Some(&last)), Observed::Absent, later),
            Decision::CreateJob
        );

        // Second failure (a new Job, created later): 60 s.
        let d = decide(&wanted(Some(&retry), Some(&last)), failed(1040), later);
        assert!(
            matches!(&d, Decision::Failed { failures: 2, next_attempt_at: Some(at), .. } if *at == t(1091)),
            "{d:?}"
        );

        // Third failure spends the budget.
        let retry2 = RetryState {
            failures: 2,
            ..retry.clone()
        };
        let d = decide(&wanted(Some(&retry2), Some(&last)), failed(1200), later);
        assert!(
            matches!(
                &d,
                Decision::Failed {
                    failures: 3,
                    next_attempt_at: None,
                    ..
                }
            ),
            "{d:?}"
        );
        let retry3 = RetryState {
            failures: 3,
            next_attempt_at: None,
            ..retry
        };
        assert_eq!(
            decide::<u32>(&wanted(Some(&retry3), Some(&last)), Observed::Absent, later),
            Decision::Exhausted
        );
    }

    #[test]
    fn a_new_revision_starts_a_fresh_budget() {
        let old = RetryState {
            revision: "rev1".into(),
            failures: 3,
            next_attempt_at: None,
        };
        assert_eq!(
            decide::<u32>(
                &wanted(Some(&old), None),
                Observed::Absent,
                Timestamp::UNIX_EPOCH
            ),
            Decision::CreateJob
        );
    }

    #[test]
    fn only_finished_jobs_of_other_revisions_are_stale() {
        let job = |name: &str, status: &str| -> JobState {
            serde_yaml::from_str(&format!("metadata: {{name: {name}}}\nstatus: {status}"))
                .expect("job")
        };
        let jobs = [
            job("c-index-new", "{succeeded: 1}"),
            job("c-index-old", "{succeeded: 1}"),
            job(
                "c-index-failed",
                "{conditions: [{type: Failed, status: 'True'}]}",
            ),
            job("c-index-newer", "{active: 1}"),
        ];
        assert_eq!(
            stale_jobs(&jobs, "c-index-new"),
            ["c-index-old", "c-index-failed"]
        );
    }

    fn stuck_since(secs: i64) -> Stuck {
        Stuck {
            reason: crate::stuck::reasons::IMAGE_PULL_BACK_OFF,
            pod: "c-index-rev2-x7".into(),
            message: "pod c-index-rev2-x7 cannot pull image \"nope:1\"".into(),
            since: Some(Timestamp::from_second(secs).expect("ts")),
        }
    }

    #[test]
    fn a_stuck_pod_waits_within_its_bound_then_counts_as_a_failure() {
        let w = wanted(None, None);
        let running = |stuck| Observed::<u32>::Running {
            created: Some(t(100)),
            stuck: Some(stuck),
        };
        let now = Timestamp::from_second(100 + 299).expect("ts");
        assert_eq!(
            decide(&w, running(stuck_since(100)), now),
            Decision::Running {
                stuck: Some(stuck_since(100))
            }
        );
        assert!(!abandoned(&running(stuck_since(100)), now));
        let now = Timestamp::from_second(100 + 300).expect("ts");
        assert!(abandoned(&running(stuck_since(100)), now));
        let d = decide(&w, running(stuck_since(100)), now);
        let Decision::Failed {
            failures: 1,
            message,
            next_attempt_at: Some(_),
        } = d
        else {
            panic!("expected a counted failure with a retry, got {d:?}");
        };
        assert_eq!(
            message,
            "ImagePullBackOff for more than 5m: pod c-index-rev2-x7 cannot pull image \"nope:1\"; the Job was stopped"
        );
        // Recorded, the Job not gone yet: not counted twice.
        let retry = RetryState {
            revision: "rev2".into(),
            failures: 1,
            next_attempt_at: Some(t(430)),
        };
        let last = record("c-index-rev2", "rev2", "Failed", Some(t(100)), None, None);
        assert_eq!(
            decide(
                &wanted(Some(&retry), Some(&last)),
                running(stuck_since(100)),
                now
            ),
            Decision::DeleteCountedFailure
        );
    }

    #[test]
    fn a_job_stopped_at_its_deadline_says_so() {
        let job: JobState = serde_yaml::from_str(
            "metadata: {name: c-index-rev2}\nstatus: {conditions: [{type: Failed, status: 'True', reason: DeadlineExceeded, message: Job was active longer than specified deadline}]}",
        )
        .expect("job");
        assert_eq!(failed_reason(&job), Some("DeadlineExceeded"));
        assert_eq!(
            job_failure_message(&job, Duration::from_secs(3600), None, "index", |_| None),
            "DeadlineExceeded: the index Job ran longer than its deadline of 1h and was stopped"
        );
        let killed = ContainerStateTerminated {
            reason: Some("Error".into()),
            exit_code: 143,
            ..Default::default()
        };
        assert_eq!(
            job_failure_message(
                &job,
                Duration::from_secs(3600),
                Some(&killed),
                "index",
                |_| None
            ),
            "DeadlineExceeded: the index Job ran longer than its deadline of 1h and was stopped; pod terminated: Error, exit code 143: the index pod failed without a message"
        );
        let other: JobState = serde_yaml::from_str(
            "metadata: {name: c-index-rev2}\nstatus: {conditions: [{type: Failed, status: 'True', reason: BackoffLimitExceeded}]}",
        )
        .expect("job");
        assert_eq!(
            job_failure_message(&other, Duration::from_secs(3600), None, "index", |_| None),
            "the index pod failed without a message"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(30));
        assert_eq!(backoff(2), Duration::from_secs(60));
        assert_eq!(backoff(3), Duration::from_secs(120));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
