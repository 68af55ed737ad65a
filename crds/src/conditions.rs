//! Condition types and stable reasons. Reasons are part of the API: alerts, Argo CD health
//! checks and scripts match on them, so they only ever get added, never renamed.

/// Condition types. `Ready`, `Reconciling` and `Stalled` follow kstatus, so `kubectl wait
/// --for=condition=Ready`, Argo CD and Flux understand every kind without custom health scripts.
pub mod types {
    /// The resource is doing its job: the index is served, the adapter is trained, the model
    /// answers requests with the revisions its spec asks for.
    pub const READY: &str = "Ready";
    /// The operator is working towards the spec (a Job runs, a rollout is in progress).
    /// Absent or False when nothing is in flight.
    pub const RECONCILING: &str = "Reconciling";
    /// The operator cannot make progress without a change to the spec or its dependencies:
    /// invalid spec, missing reference, retry budget spent. The reason says which.
    pub const STALLED: &str = "Stalled";
    /// Corpus only: an index revision built from the current sources is active.
    pub const INDEXED: &str = "Indexed";
    /// Corpus with HTTP, PVC or S3 sources only: the last check of those sources (HTTP fetch,
    /// scan Job) succeeded. False keeps the digests of the previous check, so the active
    /// revision stays; the message says which source failed.
    pub const SOURCES_CHECKED: &str = "SourcesChecked";
    /// Adapter only: an adapter revision trained from the current dataset is active.
    pub const TRAINED: &str = "Trained";
    /// HybridModel only: serving pods are available and report the desired revisions loaded.
    pub const SERVING: &str = "Serving";
    /// HybridModel only: the latency autoscaler's view (Prometheus reachable, decision made).
    pub const AUTOSCALING: &str = "Autoscaling";
}

/// Reasons set on conditions and used as Event reasons. CamelCase, as Kubernetes expects.
pub mod reasons {
    /// Everything the spec asks for is in place.
    pub const SUCCEEDED: &str = "Succeeded";
    /// A newer generation of the spec has not been processed yet.
    pub const PROGRESSING: &str = "Progressing";
    /// The spec is invalid in a way admission could not catch (for example a cross-object rule).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A referenced object (Corpus, Adapter, ServingPolicy, ConfigMap, Secret) does not exist.
    pub const REFERENCE_NOT_FOUND: &str = "ReferenceNotFound";
    /// A referenced object exists but is not Ready yet.
    pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";
    /// An Adapter was trained for a different base model than the HybridModel serves.
    pub const BASE_MODEL_MISMATCH: &str = "BaseModelMismatch";
    /// An index Job for a new content revision is running.
    pub const INDEXING: &str = "Indexing";
    /// A scan Job lists the PVC and S3 sources of a Corpus before its content revision is known.
    pub const SCANNING: &str = "Scanning";
    /// A training Job for a new training revision is running.
    pub const TRAINING: &str = "Training";
    /// A Job failed; the previous revision stays active and the Job is retried with backoff.
    pub const JOB_FAILED: &str = "JobFailed";
    /// The retry budget for a failing revision is spent; the resource waits for a spec change.
    pub const RETRY_BUDGET_EXHAUSTED: &str = "RetryBudgetExhausted";
    /// Sources could not be read to compute the content revision.
    pub const SOURCE_UNREADABLE: &str = "SourceUnreadable";
    /// Serving pods are rolling out or have not reported the desired revisions yet.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// Serving pods report the desired adapter and index revisions loaded.
    pub const REVISIONS_LOADED: &str = "RevisionsLoaded";
    /// No serving pod is available.
    pub const UNAVAILABLE: &str = "Unavailable";
    /// Autoscaling is disabled; `spec.replicas` (or an HPA through `/scale`) decides replicas.
    pub const AUTOSCALING_DISABLED: &str = "AutoscalingDisabled";
    /// Prometheus could not be queried or returned no data; replicas and top-k are held.
    pub const METRICS_UNAVAILABLE: &str = "MetricsUnavailable";
    /// Observed latency is above the SLO.
    pub const SLO_BREACHED: &str = "SLOBreached";
    /// Observed latency is within the SLO.
    pub const WITHIN_SLO: &str = "WithinSLO";
}
