//! Corpus: content revision → index Job → active index revision. The pipeline is the shared
//! [`crate::revisioned`] driver; this module says what an index revision is made of, which Job
//! builds it and how its result becomes the active revision.

pub mod index_job;

use crate::context::Context;
use crate::error::Result;
use crate::revisioned::inputs::{ConfigMaps, RemoteDigests, corpus_content_revision};
use crate::revisioned::results::{IndexResult, parse_index_report};
use crate::revisioned::{BuiltJob, Revisioned, RevisionedStatus, Words, scan_job};
use hybrid_crds::common::{Conditions, DataSource, JobRecord, Progress, RetryState};
use hybrid_crds::conditions::{reasons, types};
use hybrid_crds::corpus::IndexRevision;
use hybrid_crds::{Corpus, CorpusStatus};
use index_job::{INDEX_DEADLINE_SECONDS, IndexJobInputs, index_job, index_job_name};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const KIND: &str = "Corpus";

impl Revisioned for Corpus {
    type Status = CorpusStatus;
    /// The content revision.
    type Target = String;
    type Result = IndexResult;

    const WORDS: Words = Words {
        kind: KIND,
        command: "index",
        job: "index Job",
        builds: "builds content revision",
        revision: "content revision",
        started_for: "content revision",
        condition: types::INDEXED,
        building: reasons::INDEXING,
        create_action: "CreateIndexJob",
        inputs: "sources",
        unchecked: "sources not checked yet",
        deadline_seconds: INDEX_DEADLINE_SECONDS,
        scan: scan_job::CORPUS,
    };

    fn status(&self) -> Option<&CorpusStatus> {
        self.status.as_ref()
    }

    fn sources(&self) -> &[DataSource] {
        &self.spec.sources
    }

    fn refresh_interval(&self) -> Option<&str> {
        self.spec.refresh_interval.as_deref()
    }

    fn target(&self, config_maps: &ConfigMaps, digests: &RemoteDigests) -> Result<String> {
        corpus_content_revision(&self.spec, config_maps, digests)
    }

    fn revision_id(target: &String) -> &str {
        target
    }

    fn job_name(name: &str, target: &String) -> String {
        index_job_name(name, target)
    }

    fn is_active(status: &CorpusStatus, target: &String, _job_name: &str) -> bool {
        (status.active_revision.as_ref()).is_some_and(|a| &a.content_revision == target)
    }

    fn build_job(
        &self,
        ctx: &Context,
        target: &String,
        current: &CorpusStatus,
        _config_maps: &ConfigMaps,
    ) -> Result<BuiltJob> {
        let previous = (current.active_revision.as_ref()).map(|a| a.location.as_str());
        let job = index_job(
            self,
            &IndexJobInputs {
                content_revision: target,
                runtime_images: ctx.settings.runtime_images(),
                previous_location: previous,
            },
        )?;
        Ok(BuiltJob { job, config: None })
    }

    fn read_result(
        &self,
        message: &str,
        _target: &String,
    ) -> Result<std::result::Result<IndexResult, String>> {
        Ok(match parse_index_report(message) {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(failure)) => Err(failure.to_string()),
            Err(e) => Err(e.to_string()),
        })
    }

    fn failure_detail(message: &str) -> Option<String> {
        match parse_index_report(message) {
            Ok(Err(failure)) => Some(failure.to_string()),
            _ => None,
        }
    }

    fn record_target(status: &mut CorpusStatus, target: &String) {
        status.content_revision = Some(target.clone());
    }

    fn promote(
        &self,
        status: &mut CorpusStatus,
        result: &IndexResult,
        target: &String,
        job_name: &str,
        created_at: Time,
    ) -> String {
        let revision = IndexRevision {
            revision: result.revision.clone(),
            content_revision: target.clone(),
            location: result.location.clone(),
            documents: result.documents as i64,
            chunks: result.chunks as i64,
            job: Some(job_name.to_owned()),
            created_at: Some(created_at),
        };
        if let Some(previous) = status.active_revision.replace(revision) {
            status.previous_revisions.insert(0, previous);
        }
        (status.previous_revisions).truncate(self.spec.retain_revisions.max(0) as usize);
        format!(
            "{} chunks reused, {} embedded",
            result.reused, result.reembedded
        )
    }
}

impl RevisionedStatus for CorpusStatus {
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
        (self.active_revision.as_ref())
            .map(|a| {
                format!(
                    "index revision {} is active: {} documents, {} chunks",
                    a.revision, a.documents, a.chunks
                )
            })
            .unwrap_or_default()
    }
    fn locations(&self) -> Vec<String> {
        (self.active_revision.iter())
            .chain(&self.previous_revisions)
            .map(|r| r.location.clone())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures::{FINANCE_CORPUS, corpus};
    use crate::revisioned::jobs::Decision;
    use crate::revisioned::{StatusEvent, references_config_map};
    use crate::status::is_true;
    use hybrid_crds::CorpusSpec;

    /// The shared driver's status step, for a Corpus.
    #[allow(clippy::too_many_arguments)]
    fn next_status(
        c: &Corpus,
        current: &CorpusStatus,
        content_revision: &str,
        job_name: &str,
        decision: &Decision<IndexResult>,
        started: Option<Time>,
        finished: Option<Time>,
        now: &Time,
    ) -> (CorpusStatus, StatusEvent) {
        let target = content_revision.to_owned();
        crate::revisioned::next_status(
            c, current, &target, job_name, decision, started, finished, now,
        )
    }

    fn refresh_interval(spec: &CorpusSpec) -> Result<Option<std::time::Duration>> {
        crate::revisioned::refresh_interval(spec.refresh_interval.as_deref())
    }

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
