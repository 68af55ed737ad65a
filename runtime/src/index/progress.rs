//! Progress of an index run: log lines and a small JSON file the operator surfaces in status.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How often the progress file is rewritten and a log line printed while embedding; often enough
/// for a status update, rare enough to cost nothing.
const REPORT_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    Reading,
    Chunking,
    Embedding,
    Writing,
    Publishing,
    Done,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressSnapshot {
    pub phase: Phase,
    pub documents_done: usize,
    pub documents_total: usize,
    pub chunks_done: usize,
    pub chunks_total: usize,
    pub eta_seconds: Option<f64>,
}

pub struct Progress {
    path: Option<PathBuf>,
    snapshot: ProgressSnapshot,
    embed_started: Option<(Instant, usize)>,
    last_report: Option<Instant>,
}

impl Progress {
    pub fn new(path: Option<PathBuf>) -> Self {
        Self {
            path,
            snapshot: ProgressSnapshot {
                phase: Phase::Reading,
                documents_done: 0,
                documents_total: 0,
                chunks_done: 0,
                chunks_total: 0,
                eta_seconds: None,
            },
            embed_started: None,
            last_report: None,
        }
    }

    pub fn snapshot(&self) -> &ProgressSnapshot {
        &self.snapshot
    }

    pub fn set_totals(&mut self, documents: usize, chunks: usize) {
        self.snapshot.documents_total = documents;
        self.snapshot.chunks_total = chunks;
    }

    pub fn phase(&mut self, phase: Phase) {
        self.snapshot.phase = phase;
        if phase == Phase::Embedding {
            self.embed_started = Some((Instant::now(), self.snapshot.chunks_done));
        }
        if matches!(
            phase,
            Phase::Done | Phase::Failed | Phase::Writing | Phase::Publishing
        ) {
            self.snapshot.eta_seconds = None;
        }
        self.report(true);
    }

    /// Records finished work; `documents` and `chunks` are increments.
    pub fn advance(&mut self, documents: usize, chunks: usize) {
        self.snapshot.documents_done += documents;
        self.snapshot.chunks_done += chunks;
        if let Some((started, base)) = self.embed_started {
            let embedded = self.snapshot.chunks_done.saturating_sub(base);
            let elapsed = started.elapsed().as_secs_f64();
            if embedded > 0 && elapsed > 0.0 {
                let remaining = self
                    .snapshot
                    .chunks_total
                    .saturating_sub(self.snapshot.chunks_done);
                self.snapshot.eta_seconds =
                    Some((remaining as f64 * elapsed / embedded as f64 * 10.0).round() / 10.0);
            }
        }
        self.report(false);
    }

    fn report(&mut self, force: bool) {
        if !force
            && self
                .last_report
                .is_some_and(|t| t.elapsed() < REPORT_INTERVAL)
        {
            return;
        }
        self.last_report = Some(Instant::now());
        let s = &self.snapshot;
        tracing::info!(
            phase = ?s.phase,
            documents = %format!("{}/{}", s.documents_done, s.documents_total),
            chunks = %format!("{}/{}", s.chunks_done, s.chunks_total),
            eta_seconds = s.eta_seconds,
            "index progress"
        );
        if let Some(path) = &self.path {
            // Write-then-rename, so a reader never sees half a file.
            let tmp = path.with_extension("tmp");
            let written = serde_json::to_vec(s)
                .map_err(std::io::Error::other)
                .and_then(|json| std::fs::write(&tmp, json))
                .and_then(|()| std::fs::rename(&tmp, path));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), error = %e, "cannot write progress file");
            }
        }
    }
}
