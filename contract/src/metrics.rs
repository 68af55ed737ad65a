//! The runtime's metric names. The runtime registers them; the operator's autoscaler queries them
//! through Prometheus, and the chart's alerts and dashboard name them, so a rename here is a rename
//! everywhere a compiler can see (the chart is checked by a test against this list).

/// Chat completion requests from arrival to the last byte (histogram; `model`, `adapter`,
/// `outcome`). The autoscaler's latency SLO is its p95.
pub const REQUEST_DURATION_SECONDS: &str = "hybrid_runtime_request_duration_seconds";
/// From a request's arrival to its first token (histogram; `model`, `adapter`).
pub const TIME_TO_FIRST_TOKEN_SECONDS: &str = "hybrid_runtime_time_to_first_token_seconds";
/// Between consecutive tokens of one sequence (histogram; `model`, `adapter`).
pub const INTER_TOKEN_LATENCY_SECONDS: &str = "hybrid_runtime_inter_token_latency_seconds";
/// Embedding a question or an `/v1/embeddings` batch (histogram).
pub const EMBEDDING_DURATION_SECONDS: &str = "hybrid_runtime_embedding_duration_seconds";
/// Vector search over the loaded indexes for one question (histogram).
pub const RETRIEVAL_DURATION_SECONDS: &str = "hybrid_runtime_retrieval_duration_seconds";
/// Prompt tokens of admitted requests (counter; `model`, `adapter`).
pub const PROMPT_TOKENS_TOTAL: &str = "hybrid_runtime_prompt_tokens_total";
/// Generated tokens (counter; `model`, `adapter`).
pub const COMPLETION_TOKENS_TOTAL: &str = "hybrid_runtime_completion_tokens_total";
/// Chat completion requests by outcome (counter; `model`, `adapter`, `outcome`).
pub const REQUESTS_TOTAL: &str = "hybrid_runtime_requests_total";
/// Requests waiting for a generation slot (gauge).
pub const QUEUE_DEPTH: &str = "hybrid_runtime_queue_depth";
/// Sequences being generated now (gauge).
pub const IN_FLIGHT_SEQUENCES: &str = "hybrid_runtime_in_flight_sequences";
/// 1 per revision serving new requests (gauge; `kind`, `name`, `revision`).
pub const LOADED_REVISION_INFO: &str = "hybrid_runtime_loaded_revision_info";
/// Config (re)loads by outcome (counter; `outcome`: ok, error).
pub const CONFIG_RELOAD_TOTAL: &str = "hybrid_runtime_config_reload_total";
/// Failed attempts to write the loaded-revisions report (counter).
pub const REPORT_FAILURES_TOTAL: &str = "hybrid_runtime_report_failures_total";
/// 1 for the device the runtime computes on (gauge; `device`).
pub const DEVICE_INFO: &str = "hybrid_runtime_device_info";

/// Every name above, for checks that a query, alert or dashboard names only exported metrics.
pub const ALL: [&str; 14] = [
    REQUEST_DURATION_SECONDS,
    TIME_TO_FIRST_TOKEN_SECONDS,
    INTER_TOKEN_LATENCY_SECONDS,
    EMBEDDING_DURATION_SECONDS,
    RETRIEVAL_DURATION_SECONDS,
    PROMPT_TOKENS_TOTAL,
    COMPLETION_TOKENS_TOTAL,
    REQUESTS_TOTAL,
    QUEUE_DEPTH,
    IN_FLIGHT_SEQUENCES,
    LOADED_REVISION_INFO,
    CONFIG_RELOAD_TOTAL,
    REPORT_FAILURES_TOTAL,
    DEVICE_INFO,
];
