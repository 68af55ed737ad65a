//! Prometheus metrics of `serve` (names listed in docs/runtime-serve.md). Labels are bounded:
//! `model` is a served model id validated against the config (unknown ids count as `unknown`),
//! `adapter` an adapter name or `base`, `outcome` one of [`Outcome`].

use hybrid_contract::metrics as names;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// How a request ended, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    ClientError,
    Rejected,
    Cancelled,
    ServerError,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ClientError => "client_error",
            Outcome::Rejected => "rejected",
            Outcome::Cancelled => "cancelled",
            Outcome::ServerError => "server_error",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    pub request_duration: HistogramVec,
    pub time_to_first_token: HistogramVec,
    pub inter_token_latency: HistogramVec,
    pub embedding_duration: Histogram,
    pub retrieval_duration: Histogram,
    pub prompt_tokens: IntCounterVec,
    pub completion_tokens: IntCounterVec,
    pub requests: IntCounterVec,
    pub queue_depth: IntGauge,
    pub in_flight: IntGauge,
    pub loaded_revision: IntGaugeVec,
    pub config_reload: IntCounterVec,
    /// Failed attempts to write the loaded-revisions report on the pod (each is retried).
    pub report_failures: IntCounter,
    /// 1 for the device the model computes on (`cpu`, `cuda:0`).
    pub device: IntGaugeVec,
}

/// Request and first-token latencies span milliseconds to minutes. Between 0.5 s and 10 s, where
/// latency SLOs of chat serving sit, the buckets are close together: `histogram_quantile`
/// interpolates inside a bucket, so a p95 read from a wide bucket lands near its upper edge (every
/// request at 5.5 s reads as a p95 of 9.8 s with a 5–10 s bucket) and the autoscaler would act on
/// that error. Keep an SLO on a bucket boundary.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 60.0, 120.0,
];
const STEP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let hist = |name: &str, help: &str, buckets: &[f64], labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };
        let plain = |name: &str, help: &str| {
            let h = Histogram::with_opts(
                HistogramOpts::new(name, help).buckets(STEP_BUCKETS.to_vec()),
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let ml = &["model", "adapter"];
        let metrics = Self {
            request_duration: hist(
                names::REQUEST_DURATION_SECONDS,
                "Chat completion requests from arrival to the last byte, by outcome.",
                LATENCY_BUCKETS,
                &["model", "adapter", "outcome"],
            )?,
            time_to_first_token: hist(
                names::TIME_TO_FIRST_TOKEN_SECONDS,
                "From a request's arrival (retrieval and queueing included) to its first token.",
                LATENCY_BUCKETS,
                ml,
            )?,
            inter_token_latency: hist(
                names::INTER_TOKEN_LATENCY_SECONDS,
                "Between consecutive generated tokens of one sequence.",
                STEP_BUCKETS,
                ml,
            )?,
            embedding_duration: plain(
                names::EMBEDDING_DURATION_SECONDS,
                "Embedding a question or an /v1/embeddings input batch.",
            )?,
            retrieval_duration: plain(
                names::RETRIEVAL_DURATION_SECONDS,
                "Vector search over the loaded indexes for one question.",
            )?,
            prompt_tokens: counter(
                names::PROMPT_TOKENS_TOTAL,
                "Prompt tokens (retrieved passages included) of admitted requests.",
                ml,
            )?,
            completion_tokens: counter(names::COMPLETION_TOKENS_TOTAL, "Generated tokens.", ml)?,
            requests: counter(
                names::REQUESTS_TOTAL,
                "Chat completion requests by outcome.",
                &["model", "adapter", "outcome"],
            )?,
            queue_depth: {
                let g = IntGauge::new(
                    names::QUEUE_DEPTH,
                    "Requests waiting for a generation slot.",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            in_flight: {
                let g =
                    IntGauge::new(names::IN_FLIGHT_SEQUENCES, "Sequences being generated now.")?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            loaded_revision: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        names::LOADED_REVISION_INFO,
                        "1 for each revision serving new requests (kind: serving, adapter, index).",
                    ),
                    &["kind", "name", "revision"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            config_reload: counter(
                names::CONFIG_RELOAD_TOTAL,
                "Config (re)loads by outcome (ok, error).",
                &["outcome"],
            )?,
            report_failures: {
                let c = IntCounter::new(
                    names::REPORT_FAILURES_TOTAL,
                    "Failed attempts to write the loaded-revisions report on the pod (retried with backoff).",
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            device: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        names::DEVICE_INFO,
                        "1 for the device the base model, adapters and embedders compute on (cpu, cuda:N).",
                    ),
                    &["device"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            registry,
        };
        Ok(metrics)
    }

    /// Replaces the loaded-revision series with the new set (old revisions stop being reported).
    pub fn set_loaded(&self, revisions: &hybrid_contract::loaded::LoadedRevisions) {
        self.loaded_revision.reset();
        self.loaded_revision
            .with_label_values(&["serving", "", revisions.serving_revision.as_str()])
            .set(1);
        for (kind, list) in [
            ("adapter", &revisions.adapters),
            ("index", &revisions.indexes),
        ] {
            for item in list {
                self.loaded_revision
                    .with_label_values(&[kind, item.name.as_str(), item.revision.as_str()])
                    .set(1);
            }
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            return format!("# metrics encoding failed: {e}\n");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
