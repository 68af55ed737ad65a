//! Results of index and training Jobs, read from the pod's termination message.
//!
//! The runtime writes one JSON object to `/dev/termination-log` (under the kubelet's 4096-byte
//! cut): `IndexResult` or `TrainResult` on success, `IndexError` or `TrainError` with a stable
//! `reason` label on failure. Scan Jobs (`hybrid-runtime scan`) report `ScanResult` or
//! `ScanError` the same way. Parsing is strict about the kind, required fields and their types,
//! and tolerant of extra fields, so a newer runtime can add fields without breaking the operator.

use crate::error::{Error, Result};
use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexResult {
    pub revision: String,
    pub documents: u64,
    pub chunks: u64,
    pub reused: u64,
    pub reembedded: u64,
    pub duration_seconds: f64,
    pub location: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainResult {
    pub revision: String,
    pub artifact_uri: String,
    pub final_loss: f64,
    /// Absent when the dataset was too small for a held-out split.
    pub eval_loss: Option<f64>,
    pub steps: u64,
    pub tokens_per_second: f64,
    pub duration_seconds: f64,
}

/// What `hybrid-runtime scan` reports: a digest of the PVC and S3 sources' listing.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanResult {
    pub digest: String,
    pub documents: u64,
}

/// A failure the runtime reported, with its stable reason label.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct JobFailure {
    pub reason: String,
    pub message: String,
}

impl std::fmt::Display for JobFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind")]
pub enum JobReport {
    IndexResult(IndexResult),
    TrainResult(TrainResult),
    ScanResult(ScanResult),
    IndexError(JobFailure),
    TrainError(JobFailure),
    ScanError(JobFailure),
}

/// Parses a termination message. Garbage (a log tail from `FallbackToLogsOnError`, a truncated
/// message, an unknown kind) is an error that quotes the start of the message.
pub fn parse_report(message: &str) -> Result<JobReport> {
    let trimmed = message.trim();
    if trimmed.is_empty() {
        return Err(Error::JobResult(
            "the pod left no termination message".to_owned(),
        ));
    }
    serde_json::from_str(trimmed).map_err(|e| {
        let excerpt: String = trimmed.chars().take(200).collect();
        Error::JobResult(format!("{e}; message starts with {excerpt:?}"))
    })
}

/// The outcome of an index Job: the result, or the failure to record.
pub fn parse_index_report(message: &str) -> Result<std::result::Result<IndexResult, JobFailure>> {
    match parse_report(message)? {
        JobReport::IndexResult(r) => Ok(Ok(r)),
        JobReport::IndexError(f) => Ok(Err(f)),
        other => Err(Error::JobResult(format!(
            "an index Job reported {}",
            kind_of(&other)
        ))),
    }
}

/// The outcome of a training Job: the result, or the failure to record.
pub fn parse_train_report(message: &str) -> Result<std::result::Result<TrainResult, JobFailure>> {
    match parse_report(message)? {
        JobReport::TrainResult(r) => Ok(Ok(r)),
        JobReport::TrainError(f) => Ok(Err(f)),
        other => Err(Error::JobResult(format!(
            "a training Job reported {}",
            kind_of(&other)
        ))),
    }
}

/// The outcome of a scan Job: the listing digest, or the failure to record.
pub fn parse_scan_report(message: &str) -> Result<std::result::Result<ScanResult, JobFailure>> {
    match parse_report(message)? {
        JobReport::ScanResult(r) => Ok(Ok(r)),
        JobReport::ScanError(f) => Ok(Err(f)),
        other => Err(Error::JobResult(format!(
            "a scan Job reported {}",
            kind_of(&other)
        ))),
    }
}

fn kind_of(r: &JobReport) -> &'static str {
    match r {
        JobReport::IndexResult(_) => "IndexResult",
        JobReport::TrainResult(_) => "TrainResult",
        JobReport::ScanResult(_) => "ScanResult",
        JobReport::IndexError(_) => "IndexError",
        JobReport::TrainError(_) => "TrainError",
        JobReport::ScanError(_) => "ScanError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_success_is_parsed() {
        let r = parse_index_report(
            r#"{"kind":"IndexResult","revision":"ix-3f2a","documents":10,"chunks":120,"reused":100,"reembedded":20,"durationSeconds":4.5,"location":"/pvc/a/indexes/ix-3f2a.tar.gz"}"#,
        )
        .expect("parsed")
        .expect("success");
        assert_eq!(r.revision, "ix-3f2a");
        assert_eq!(
            (r.documents, r.chunks, r.reused, r.reembedded),
            (10, 120, 100, 20)
        );
        assert_eq!(r.location, "/pvc/a/indexes/ix-3f2a.tar.gz");
    }

    #[test]
    fn train_success_and_failures_are_parsed() {
        let r = parse_train_report(
            "{\"kind\":\"TrainResult\",\"revision\":\"ad-1\",\"artifactUri\":\"/pvc/a/adapters/ad-1\",\"finalLoss\":0.8,\"evalLoss\":null,\"steps\":40,\"tokensPerSecond\":900.5,\"durationSeconds\":61.0}\n",
        )
        .expect("parsed")
        .expect("success");
        assert_eq!(r.artifact_uri, "/pvc/a/adapters/ad-1");
        assert_eq!(r.eval_loss, None);
        assert_eq!(r.steps, 40);

        let f = parse_train_report(
            r#"{"kind":"TrainError","reason":"SequenceTooLong","message":"line 7: 900 tokens > 256"}"#,
        )
        .expect("parsed")
        .expect_err("failure");
        assert_eq!(f.reason, "SequenceTooLong");
        assert_eq!(f.to_string(), "SequenceTooLong: line 7: 900 tokens > 256");

        let f = parse_index_report(
            r#"{"kind":"IndexError","reason":"EmptyCorpus","message":"no text"}"#,
        )
        .expect("parsed")
        .expect_err("failure");
        assert_eq!(f.reason, "EmptyCorpus");
    }

    #[test]
    fn scan_results_and_errors_are_parsed() {
        let r = parse_scan_report(
            r#"{"kind":"ScanResult","digest":"9f2c","documents":14,"bytes":2048,"durationSeconds":0.2}"#,
        )
        .expect("parsed")
        .expect("success");
        assert_eq!((r.digest.as_str(), r.documents), ("9f2c", 14));
        let f = parse_scan_report(
            r#"{"kind":"ScanError","reason":"SourceUnreadable","message":"cannot list /pvc/docs"}"#,
        )
        .expect("parsed")
        .expect_err("failure");
        assert_eq!(f.to_string(), "SourceUnreadable: cannot list /pvc/docs");
        let err = parse_scan_report(r#"{"kind":"IndexError","reason":"X","message":"not a scan"}"#)
            .expect_err("kind mismatch");
        assert!(err.to_string().contains("a scan Job reported IndexError"));
    }

    #[test]
    fn extra_fields_are_tolerated() {
        let r = parse_index_report(
            r#"{"kind":"IndexResult","revision":"r","documents":1,"chunks":1,"reused":0,"reembedded":1,"durationSeconds":1,"location":"l","shardBytes":42}"#,
        )
        .expect("parsed");
        assert!(r.is_ok());
    }

    #[test]
    fn garbage_is_a_clear_error() {
        for (message, needle) in [
            ("", "no termination message"),
            (
                "thread 'main' panicked at src/main.rs",
                "message starts with",
            ),
            (r#"{"kind":"IndexResult","revision":"r"}"#, "missing field"),
            (
                r#"{"kind":"IndexResult","revision":"r","documents":"ten","chunks":1,"reused":0,"reembedded":1,"durationSeconds":1,"location":"l"}"#,
                "invalid type",
            ),
            (r#"{"kind":"Surprise"}"#, "unknown variant"),
            (r#"{"revision":"r"}"#, "missing field `kind`"),
        ] {
            let err = parse_report(message).expect_err(message);
            assert_eq!(err.label(), "JobResultInvalid");
            assert!(
                err.to_string().contains(needle),
                "{err} should mention {needle}"
            );
        }
        let err = parse_index_report(r#"{"kind":"TrainError","reason":"X","message":"wrong job"}"#)
            .expect_err("kind mismatch");
        assert!(err.to_string().contains("an index Job reported TrainError"));
    }
}
