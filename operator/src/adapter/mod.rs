//! Adapter: dataset digest → training revision → training Job → active adapter revision. The
//! pipeline is the shared [`crate::revisioned`] driver; this module says what a training
//! revision is made of, which Job trains it and how its result becomes the active revision.

pub mod train_job;

use crate::context::Context;
use crate::error::Result;
use crate::revisioned::inputs::{ConfigMaps, RemoteDigests, dataset_digest, training_revision};
use crate::revisioned::results::{JobFailure, TrainResult, parse_train_report};
use crate::revisioned::{BuiltJob, Revisioned, RevisionedStatus, Words, scan_job};
use hybrid_crds::adapter::AdapterRevision;
use hybrid_crds::common::{Conditions, DataSource, JobRecord, Progress, RetryState};
use hybrid_crds::conditions::{reasons, types};
use hybrid_crds::{Adapter, AdapterStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use train_job::{TRAIN_DEADLINE_SECONDS, TrainJobInputs, train_job, train_job_name};

pub const KIND: &str = "Adapter";

/// Earlier adapter revisions kept in status for rollback.
pub const MAX_PREVIOUS: usize = 5;

/// What a training revision is made of.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingTarget {
    pub dataset_digest: String,
    pub training_revision: String,
}

impl Revisioned for Adapter {
    type Status = AdapterStatus;
    type Target = TrainingTarget;
    type Result = TrainResult;

    const WORDS: Words = Words {
        kind: KIND,
        command: "train",
        job: "training Job",
        builds: "trains revision",
        revision: "revision",
        started_for: "training revision",
        condition: types::TRAINED,
        building: reasons::TRAINING,
        create_action: "CreateTrainingJob",
        inputs: "dataset",
        unchecked: "datasets not checked yet",
        deadline_seconds: TRAIN_DEADLINE_SECONDS,
        scan: scan_job::ADAPTER,
    };

    fn status(&self) -> Option<&AdapterStatus> {
        self.status.as_ref()
    }

    fn sources(&self) -> &[DataSource] {
        &self.spec.dataset
    }

    fn refresh_interval(&self) -> Option<&str> {
        self.spec.refresh_interval.as_deref()
    }

    fn target(&self, config_maps: &ConfigMaps, digests: &RemoteDigests) -> Result<TrainingTarget> {
        let dataset = dataset_digest(&self.spec.dataset, config_maps, digests)?;
        let revision = training_revision(&self.spec, &dataset)?;
        Ok(TrainingTarget {
            dataset_digest: dataset,
            training_revision: revision,
        })
    }

    fn revision_id(target: &TrainingTarget) -> &str {
        &target.training_revision
    }

    fn job_name(name: &str, target: &TrainingTarget) -> String {
        train_job_name(name, &target.training_revision)
    }

    /// The adapter revision id is the runtime's; the Job that trained it names the training
    /// revision it came from.
    fn is_active(status: &AdapterStatus, _target: &TrainingTarget, job_name: &str) -> bool {
        (status.active_revision.as_ref()).is_some_and(|a| a.job.as_deref() == Some(job_name))
    }

    fn build_job(
        &self,
        ctx: &Context,
        target: &TrainingTarget,
        _current: &AdapterStatus,
        config_maps: &ConfigMaps,
    ) -> Result<BuiltJob> {
        let built = train_job(
            self,
            &TrainJobInputs {
                training_revision: &target.training_revision,
                runtime_images: ctx.settings.runtime_images(),
                config_maps,
            },
        )?;
        Ok(BuiltJob {
            job: built.job,
            config: built.config,
        })
    }

    fn read_result(
        &self,
        message: &str,
        _target: &TrainingTarget,
    ) -> Result<std::result::Result<TrainResult, String>> {
        Ok(match parse_result(message) {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(failure)) => Err(failure.to_string()),
            // An image trainer's Job ends with `hybrid-runtime verify-adapter`, which checks
            // /output and always reports; without its result nothing is known to be servable.
            Err(e) if self.spec.trainer.image.is_some() => Err(format!(
                "{e}: the training Job succeeded without the result that `hybrid-runtime verify-adapter` reports after checking the trainer image's /output, so nothing is promoted"
            )),
            Err(e) => Err(e.to_string()),
        })
    }

    fn failure_detail(message: &str) -> Option<String> {
        match parse_train_report(message) {
            Ok(Err(failure)) => Some(failure.to_string()),
            _ => None,
        }
    }

    fn record_target(status: &mut AdapterStatus, target: &TrainingTarget) {
        status.dataset_digest = Some(target.dataset_digest.clone());
        status.training_revision = Some(target.training_revision.clone());
    }

    fn promote(
        &self,
        status: &mut AdapterStatus,
        result: &TrainResult,
        target: &TrainingTarget,
        job_name: &str,
        created_at: Time,
    ) -> String {
        let new = AdapterRevision {
            revision: result.revision.clone(),
            artifact_uri: result.artifact_uri.clone(),
            dataset_digest: Some(target.dataset_digest.clone()),
            job: Some(job_name.to_owned()),
            // Image trainers that write no result report no loss.
            final_loss: Some(result.final_loss).filter(|l| l.is_finite()),
            eval_loss: result.eval_loss,
            created_at: Some(created_at),
        };
        if let Some(previous) = status.active_revision.replace(new) {
            status.previous_revisions.insert(0, previous);
        }
        // Adapters have no retention setting; keep a bounded history for rollback.
        status.previous_revisions.truncate(MAX_PREVIOUS);
        format!("{} steps in {:.0}s", result.steps, result.duration_seconds)
    }
}

/// [`parse_train_report`], reading `"finalLoss": null` as NaN: JSON has no NaN, and a trainer
/// image that reports no loss gets a `TrainResult` without one (`promote` leaves it out).
fn parse_result(message: &str) -> Result<std::result::Result<TrainResult, JobFailure>> {
    let no_loss = match serde_json::from_str::<serde_json::Value>(message.trim()) {
        Ok(mut doc)
            if doc.get("kind").and_then(|k| k.as_str()) == Some("TrainResult")
                && doc.get("finalLoss").is_some_and(|l| l.is_null()) =>
        {
            doc["finalLoss"] = 0.0.into();
            Some(doc.to_string())
        }
        _ => None,
    };
    match no_loss {
        Some(message) => Ok(parse_train_report(&message)?.map(|result| TrainResult {
            final_loss: f64::NAN,
            ..result
        })),
        None => parse_train_report(message),
    }
}

impl RevisionedStatus for AdapterStatus {
    fn observed_generation_mut(&mut self) -> &mut Option<i64> {
        &mut self.observed_generation
    }
    fn conditions_mut(&mut self) -> &mut Conditions {
        &mut self.conditions
    }
    fn retry(&self) -> Option<&RetryState> {
        self.retry.as_ref()
    }
    fn retry_mut(&mut self) -> &mut Option<RetryState> {
        &mut self.retry
    }
    fn progress_mut(&mut self) -> &mut Option<Progress> {
        &mut self.progress
    }
    fn last_job(&self) -> Option<&JobRecord> {
        self.last_job.as_ref()
    }
    fn last_job_mut(&mut self) -> &mut Option<JobRecord> {
        &mut self.last_job
    }
    fn active_revision_id(&self) -> Option<&str> {
        (self.active_revision.as_ref()).map(|a| a.revision.as_str())
    }
    fn active_message(&self) -> String {
        match &self.active_revision {
            Some(a) => match a.final_loss {
                Some(loss) => format!(
                    "adapter revision {} is active (final loss {loss:.4})",
                    a.revision
                ),
                None => format!("adapter revision {} is active", a.revision),
            },
            None => String::new(),
        }
    }
    fn locations(&self) -> Vec<String> {
        (self.active_revision.iter())
            .chain(&self.previous_revisions)
            .map(|r| r.artifact_uri.clone())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures::{FINANCE_ADAPTER, adapter};
    use crate::revisioned::StatusEvent;
    use crate::revisioned::jobs::Decision;
    use crate::status::{find, is_true};
    use hybrid_crds::AdapterSpec;
    use std::time::Duration;

    /// The shared driver's status step, for an Adapter.
    #[allow(clippy::too_many_arguments)]
    fn next_status(
        a: &Adapter,
        current: &AdapterStatus,
        dataset: &str,
        revision: &str,
        job_name: &str,
        decision: &Decision<TrainResult>,
        started: Option<Time>,
        finished: Option<Time>,
        now: &Time,
    ) -> (AdapterStatus, StatusEvent) {
        let target = TrainingTarget {
            dataset_digest: dataset.to_owned(),
            training_revision: revision.to_owned(),
        };
        crate::revisioned::next_status(
            a, current, &target, job_name, decision, started, finished, now,
        )
    }

    fn refresh_interval(spec: &AdapterSpec) -> Result<Option<std::time::Duration>> {
        crate::revisioned::refresh_interval(spec.refresh_interval.as_deref())
    }

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

    fn image_trainer() -> Adapter {
        adapter(&FINANCE_ADAPTER.replace(
            "trainer: {builtin: {}}",
            "trainer: {image: {image: registry.example.com/ml/trainer:1.4}}",
        ))
    }

    fn read(a: &Adapter, message: &str) -> std::result::Result<TrainResult, String> {
        let target = TrainingTarget {
            dataset_digest: "ds1".into(),
            training_revision: "abcdef0123456789".into(),
        };
        a.read_result(message, &target).expect("no operator error")
    }

    #[test]
    fn an_image_trainers_job_without_a_result_is_a_failed_attempt() {
        let a = image_trainer();
        for message in [
            "",
            "Traceback (most recent call last):\n  File \"train.py\"",
        ] {
            let err = read(&a, message).expect_err("not promoted without a result");
            assert!(
                err.contains("job result unreadable")
                    && err.contains("hybrid-runtime verify-adapter")
                    && err.contains("nothing is promoted"),
                "{err}"
            );
        }
        assert_eq!(
            read(&adapter(FINANCE_ADAPTER), "").expect_err("built-in"),
            "job result unreadable: the pod left no termination message"
        );
    }

    #[test]
    fn an_image_trainers_verified_result_is_read_and_its_failure_named() {
        let a = image_trainer();
        let err = read(
            &a,
            r#"{"kind":"TrainError","reason":"InvalidAdapterOutput","message":"the trainer's output is not a LoRA adapter that serving can load: /output is empty"}"#,
        )
        .expect_err("invalid output");
        assert!(
            err.starts_with("InvalidAdapterOutput: ") && err.ends_with("/output is empty"),
            "{err}"
        );
        // verify-adapter without a loss from the trainer: finalLoss null reads as no loss.
        let ok = read(
            &a,
            r#"{"kind":"TrainResult","revision":"abcdef0123456789","artifactUri":"file:///pvc/hybrid-artifacts/adapters/abcdef0123456789","finalLoss":null,"evalLoss":null,"steps":0,"tokensPerSecond":0.0,"durationSeconds":0.0}"#,
        )
        .expect("verified");
        assert!(ok.final_loss.is_nan());
        assert_eq!(
            ok.artifact_uri,
            "file:///pvc/hybrid-artifacts/adapters/abcdef0123456789"
        );
        let with_loss = read(
            &a,
            r#"{"kind":"TrainResult","revision":"r","artifactUri":"file:///x/r","finalLoss":0.5,"evalLoss":0.6,"steps":3,"tokensPerSecond":1.0,"durationSeconds":2.0}"#,
        )
        .expect("verified");
        assert_eq!(
            (with_loss.final_loss, with_loss.eval_loss),
            (0.5, Some(0.6))
        );
        // A null anywhere else is still a contract error.
        assert!(
            read(
                &a,
                r#"{"kind":"TrainResult","revision":"r","artifactUri":null,"finalLoss":null,"evalLoss":null,"steps":0,"tokensPerSecond":0.0,"durationSeconds":0.0}"#,
            )
            .is_err()
        );
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
