//! Operator metrics. Label values are bounded: the kind, and the error's stable label.

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use std::time::Instant;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    reconcile_duration: HistogramVec,
    reconcile_errors: IntCounterVec,
    jobs_started: IntCounterVec,
    jobs_finished: IntCounterVec,
    revision_stale: GaugeVec,
    stalled: IntGaugeVec,
    // Read and registered only with jemalloc (the `jemalloc` feature).
    #[cfg_attr(not(feature = "jemalloc"), allow(dead_code))]
    heap_allocated: IntGauge,
    #[cfg_attr(not(feature = "jemalloc"), allow(dead_code))]
    heap_resident: IntGauge,
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
        // Per-object series (namespace, name): bounded by the number of resources, and removed
        // when a resource is deleted ([`Metrics::forget`]).
        let jobs_finished = IntCounterVec::new(
            Opts::new(
                "hybrid_operator_jobs_finished_total",
                "Index and training Jobs finished, by kind, outcome (succeeded, failed) and owner.",
            ),
            &["kind", "outcome", "namespace", "name"],
        )?;
        let revision_stale = GaugeVec::new(
            Opts::new(
                "hybrid_operator_revision_stale_seconds",
                "Seconds since the sources or dataset changed without the new revision being active (0 when current).",
            ),
            &["kind", "namespace", "name"],
        )?;
        let stalled = IntGaugeVec::new(
            Opts::new(
                "hybrid_operator_stalled",
                "1 while the resource is Stalled (waits for a spec change).",
            ),
            &["kind", "namespace", "name"],
        )?;
        // The allocator's counts: what the caches and queues hold, and what the process keeps
        // from the OS (RSS less code and stacks).
        let heap_allocated = IntGauge::new(
            "hybrid_operator_heap_allocated_bytes",
            "Bytes allocated by the operator (jemalloc stats.allocated).",
        )?;
        let heap_resident = IntGauge::new(
            "hybrid_operator_heap_resident_bytes",
            "Bytes of the allocator's pages resident in memory (jemalloc stats.resident).",
        )?;
        if cfg!(feature = "jemalloc") {
            registry.register(Box::new(heap_allocated.clone()))?;
            registry.register(Box::new(heap_resident.clone()))?;
        }
        registry.register(Box::new(jobs_finished.clone()))?;
        registry.register(Box::new(revision_stale.clone()))?;
        registry.register(Box::new(stalled.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(jobs_started.clone()))?;
        Ok(Self {
            registry,
            reconcile_duration,
            reconcile_errors,
            jobs_started,
            jobs_finished,
            revision_stale,
            stalled,
            heap_allocated,
            heap_resident,
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

    /// A Job of a Corpus (`kind` "index") or Adapter ("train") finished.
    pub fn job_finished(&self, kind: &'static str, succeeded: bool, namespace: &str, name: &str) {
        let outcome = if succeeded { "succeeded" } else { "failed" };
        self.jobs_finished
            .with_label_values(&[kind, outcome, namespace, name])
            .inc();
    }

    /// How long a resource's newest content has waited for its revision (`None`: current).
    pub fn set_revision_stale(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        stale_for: Option<std::time::Duration>,
    ) {
        self.revision_stale
            .with_label_values(&[kind, namespace, name])
            .set(stale_for.map_or(0.0, |d| d.as_secs_f64()));
    }

    pub fn set_stalled(&self, kind: &'static str, namespace: &str, name: &str, stalled: bool) {
        self.stalled
            .with_label_values(&[kind, namespace, name])
            .set(i64::from(stalled));
    }

    /// Sets the per-object gauges from a status about to be written: Stalled, and for how long
    /// the `revision_condition` (Indexed, Trained) has been False, i.e. the newest sources have
    /// waited for their revision.
    pub fn record_status(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
        revision_condition: Option<&str>,
        now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    ) {
        let stalled = crate::status::is_true(conditions, hybrid_crds::conditions::types::STALLED);
        self.set_stalled(kind, namespace, name, stalled);
        if let Some(type_) = revision_condition {
            let stale_for = crate::status::find(conditions, type_)
                .filter(|c| c.status == "False")
                .map(|c| {
                    let secs = now.0.as_second() - c.last_transition_time.0.as_second();
                    std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0))
                });
            self.set_revision_stale(kind, namespace, name, stale_for);
        }
    }

    /// Drops the per-object series of a deleted resource of `kind`. The Job series are keyed by
    /// the Job's kind; `scan` and `prune` serve Corpora and Adapters both, so a same-named
    /// resource of the other kind restarts those two counters (a counter reset, which `rate`
    /// and `increase` handle).
    pub fn forget(&self, kind: &str, namespace: &str, name: &str) {
        let _ = self
            .revision_stale
            .remove_label_values(&[kind, namespace, name]);
        let _ = self.stalled.remove_label_values(&[kind, namespace, name]);
        let job_kinds: &[&str] = match kind {
            "Corpus" => &["index", "scan", "prune"],
            "Adapter" => &["train", "scan", "prune"],
            _ => &[],
        };
        for job_kind in job_kinds {
            for outcome in ["succeeded", "failed"] {
                let _ = self
                    .jobs_finished
                    .remove_label_values(&[job_kind, outcome, namespace, name]);
            }
        }
    }

    /// Text exposition format for `/metrics`.
    pub fn render(&self) -> String {
        self.read_heap();
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
    }
}

impl Metrics {
    /// jemalloc's counts, as of now (its statistics are cached until the epoch advances).
    #[cfg(feature = "jemalloc")]
    fn read_heap(&self) {
        use tikv_jemalloc_ctl::{epoch, stats};
        if epoch::advance().is_err() {
            return;
        }
        if let Ok(bytes) = stats::allocated::read() {
            self.heap_allocated.set(bytes as i64);
        }
        if let Ok(bytes) = stats::resident::read() {
            self.heap_resident.set(bytes as i64);
        }
    }

    /// Without jemalloc there are no allocator counts; the series are not registered.
    #[cfg(not(feature = "jemalloc"))]
    fn read_heap(&self) {}
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

    #[test]
    fn per_object_series_are_named_as_the_alerts_expect_and_forgotten() {
        let m = Metrics::new().expect("metrics");
        m.job_finished("index", false, "ml", "docs");
        m.set_revision_stale(
            "Corpus",
            "ml",
            "docs",
            Some(std::time::Duration::from_secs(90)),
        );
        m.set_stalled("Corpus", "ml", "docs", true);
        let text = m.render();
        for line in [
            r#"hybrid_operator_jobs_finished_total{kind="index",name="docs",namespace="ml",outcome="failed"} 1"#,
            r#"hybrid_operator_revision_stale_seconds{kind="Corpus",name="docs",namespace="ml"} 90"#,
            r#"hybrid_operator_stalled{kind="Corpus",name="docs",namespace="ml"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        m.forget("Corpus", "ml", "docs");
        assert!(!m.render().contains("name=\"docs\""), "{}", m.render());
    }
}
