//! Operator metrics. Label values are bounded: the kind, and the error's stable label.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::time::Instant;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    reconcile_duration: HistogramVec,
    reconcile_errors: IntCounterVec,
    jobs_started: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "hybrid_operator_reconcile_duration_seconds",
                "Time spent in one reconcile, by kind.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["kind"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "hybrid_operator_reconcile_errors_total",
                "Reconciles that failed, by kind and error reason.",
            ),
            &["kind", "reason"],
        )?;
        let jobs_started = IntCounterVec::new(
            Opts::new(
                "hybrid_operator_jobs_started_total",
                "Index and training Jobs created, by kind (index, train).",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(jobs_started.clone()))?;
        Ok(Self {
            registry,
            reconcile_duration,
            reconcile_errors,
            jobs_started,
        })
    }

    /// Records the reconcile duration when dropped, whatever path the reconcile returns by.
    pub fn reconcile_timer(&self, kind: &'static str) -> ReconcileTimer {
        ReconcileTimer {
            histogram: self.reconcile_duration.clone(),
            kind,
            start: Instant::now(),
        }
    }

    pub fn reconcile_failed(&self, kind: &'static str, reason: &'static str) {
        self.reconcile_errors
            .with_label_values(&[kind, reason])
            .inc();
    }

    pub fn job_started(&self, kind: &'static str) {
        self.jobs_started.with_label_values(&[kind]).inc();
    }

    /// Text exposition format for `/metrics`.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
    }
}

pub struct ReconcileTimer {
    histogram: HistogramVec,
    kind: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram
            .with_label_values(&[self.kind])
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_bounded_labels() {
        let m = Metrics::new().expect("metrics");
        {
            let _t = m.reconcile_timer("Corpus");
        }
        m.reconcile_failed("Corpus", "KubeApi");
        m.job_started("index");
        let text = m.render();
        assert!(
            text.contains("hybrid_operator_reconcile_duration_seconds_count{kind=\"Corpus\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "hybrid_operator_reconcile_errors_total{kind=\"Corpus\",reason=\"KubeApi\"} 1"
        ));
        assert!(text.contains("hybrid_operator_jobs_started_total{kind=\"index\"} 1"));
    }
}
