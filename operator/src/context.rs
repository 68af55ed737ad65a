//! What every reconciler shares: the client, settings, metrics and the Event publisher.

use crate::error::Error;
use crate::events::Publisher;
use crate::metrics::Metrics;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Periodic resync of a healthy resource: catches drift no watch reports (a ConfigMap edited
/// while the operator was down is also caught by the first reconcile after start).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Requeue after a transient error (API server unreachable, conflict).
pub const TRANSIENT_RETRY: Duration = Duration::from_secs(15);

#[derive(Clone, Debug)]
pub struct Settings {
    /// Image of `hybrid-runtime`, used by index and training Jobs and serving pods.
    pub runtime_image: String,
    /// Its CUDA build, for those of them that request GPUs.
    pub runtime_cuda_image: String,
    /// The ServiceMonitor CRD (Prometheus Operator) is served: give each HybridModel one.
    pub service_monitors: bool,
    /// Reconciles of each kind run at once (0: no limit). Bounds memory and the requests in
    /// flight when every object is reconciled at once (start-up, a watch relist).
    pub concurrency: u16,
}

impl Settings {
    pub fn runtime_images(&self) -> crate::objects::RuntimeImages<'_> {
        crate::objects::RuntimeImages {
            cpu: &self.runtime_image,
            cuda: &self.runtime_cuda_image,
        }
    }
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Metrics,
    pub events: Publisher,
    /// Fetches HTTP sources (timeouts are set per request, `sources::HTTP_TIMEOUT`).
    pub http: reqwest::Client,
    /// When each Corpus's HTTP and scanned sources are next checked.
    pub refresh: crate::revisioned::refresh::RefreshSchedule,
    /// Namespaces whose runtime RBAC (ServiceAccount, Role, RoleBinding) was checked.
    pub runtime_rbac: NamespaceChecks,
    /// Cancelled on SIGTERM or SIGINT: every controller stops taking work, finishes the
    /// reconciles in flight and returns. One token, so no controller can miss the signal.
    pub shutdown: CancellationToken,
}

/// Per namespace, the last check of objects shared by every HybridModel there: what was checked
/// (a digest of the desired objects) and when. The lock per namespace lets one reconcile check
/// while the others in that namespace wait for its outcome instead of repeating it.
#[derive(Default)]
pub struct NamespaceChecks {
    slots: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Checked>>>>>,
}

pub struct Checked {
    digest: String,
    at: Instant,
}

impl Checked {
    pub fn now(digest: String) -> Self {
        Self {
            digest,
            at: Instant::now(),
        }
    }

    /// Checked for these desired objects less than `max_age` ago.
    pub fn is_fresh(&self, digest: &str, max_age: Duration) -> bool {
        self.digest == digest && self.at.elapsed() < max_age
    }
}

impl NamespaceChecks {
    pub fn slot(&self, namespace: &str) -> Arc<tokio::sync::Mutex<Option<Checked>>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(namespace.to_owned()).or_default().clone()
    }

    /// The next reconcile in `namespace` checks again (a HybridModel there was deleted, maybe
    /// with the namespace and everything in it).
    pub fn forget(&self, namespace: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.remove(namespace);
    }
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Metrics,
        instance: Option<String>,
        http: reqwest::Client,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let events = Publisher::new(client.clone(), "hybrid-operator", instance);
        Arc::new(Self {
            client,
            settings,
            metrics,
            events,
            http,
            refresh: Default::default(),
            runtime_rbac: Default::default(),
            shutdown,
        })
    }

    /// Publishes an Event on `obj`. Events are best effort: a failure is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.events.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "publishing an Event failed");
        }
    }
}

/// The error policy of every controller: count the failure by its label, and requeue transient
/// errors. Permanent errors are turned into a Stalled condition by the reconciler itself and
/// never reach here as errors.
pub fn error_policy<K>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |_obj, error, ctx| {
        ctx.metrics.reconcile_failed(kind, error.label());
        tracing::warn!(kind, reason = error.label(), %error, "reconcile failed");
        if error.is_transient() {
            Action::requeue(TRANSIENT_RETRY)
        } else {
            Action::await_change()
        }
    }
}
