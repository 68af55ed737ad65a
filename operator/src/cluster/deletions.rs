//! Forgetting deleted resources: the per-object series (`hybrid_operator_stalled`,
//! `hybrid_operator_revision_stale_seconds`, `hybrid_operator_jobs_finished_total`) of a resource
//! that no longer exists are dropped, so an alert on a Stalled Corpus ends when the Corpus is
//! deleted instead of firing forever.
//!
//! Controllers do not reconcile deleted objects (only those with a finalizer, and most have
//! none), so each kind gets a metadata-only watch: object names, no specs. A Delete event forgets
//! the object; so does a relist that no longer contains it, which covers deletions the watch
//! missed while it was reconnecting.

use crate::context::Context;
use futures::StreamExt;
use hybrid_crds::{Adapter, Corpus, HybridModel, ServingPolicy};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Runs until the process stops (with the controllers, on the leader only).
pub async fn run(ctx: Arc<Context>) {
    tokio::join!(
        forget_deleted::<Corpus>(&ctx),
        forget_deleted::<Adapter>(&ctx),
        forget_deleted::<HybridModel>(&ctx),
        forget_deleted::<ServingPolicy>(&ctx),
    );
}

/// The (namespace, name) pairs of the objects that exist, kept current from watch events; what
/// leaves the set is forgotten.
#[derive(Default)]
struct Known {
    live: BTreeSet<(String, String)>,
    /// Filled during a relist, swapped in when it is done.
    relisting: BTreeSet<(String, String)>,
}

impl Known {
    /// Applies one event; returns the objects that are gone.
    fn apply<K: Resource>(&mut self, event: watcher::Event<K>) -> Vec<(String, String)> {
        let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
        match event {
            watcher::Event::Apply(o) => {
                self.live.insert(key(&o));
                Vec::new()
            }
            watcher::Event::Delete(o) => {
                let k = key(&o);
                self.live.remove(&k);
                vec![k]
            }
            watcher::Event::Init => {
                self.relisting.clear();
                Vec::new()
            }
            watcher::Event::InitApply(o) => {
                self.relisting.insert(key(&o));
                Vec::new()
            }
            watcher::Event::InitDone => {
                let fresh = std::mem::take(&mut self.relisting);
                let gone = self.live.difference(&fresh).cloned().collect();
                self.live = fresh;
                gone
            }
        }
    }
}

async fn forget_deleted<K>(ctx: &Context)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let kind = K::kind(&()).into_owned();
    let mut known = Known::default();
    // `Api<PartialObjectMeta<K>>` lists and watches metadata only.
    let events = watcher(
        Api::<PartialObjectMeta<K>>::all(ctx.client.clone()),
        crate::cluster::caches::watch(),
    )
    .default_backoff();
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                for (ns, name) in known.apply(event) {
                    ctx.metrics.forget(&kind, &ns, &name);
                }
            }
            Err(e) => tracing::debug!(kind, error = %e, "watching for deleted objects"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    // Any kind will do: `Known` only reads names.
    fn meta(ns: &str, name: &str) -> ConfigMap {
        let mut m = ConfigMap::default();
        m.metadata.namespace = Some(ns.to_owned());
        m.metadata.name = Some(name.to_owned());
        m
    }

    fn key(ns: &str, name: &str) -> (String, String) {
        (ns.to_owned(), name.to_owned())
    }

    #[test]
    fn deletes_and_relists_without_an_object_forget_it() {
        let mut known = Known::default();
        assert!(known.apply(watcher::Event::<ConfigMap>::Init).is_empty());
        for (ns, name) in [("a", "x"), ("a", "y"), ("b", "x")] {
            assert!(
                known
                    .apply(watcher::Event::InitApply(meta(ns, name)))
                    .is_empty()
            );
        }
        assert!(
            known
                .apply(watcher::Event::<ConfigMap>::InitDone)
                .is_empty()
        );
        assert_eq!(
            known.apply(watcher::Event::Delete(meta("a", "x"))),
            [key("a", "x")]
        );
        assert!(
            known
                .apply(watcher::Event::Apply(meta("c", "z")))
                .is_empty()
        );
        // The watch reconnected; b/x was deleted meanwhile and its Delete event was lost.
        known.apply(watcher::Event::<ConfigMap>::Init);
        known.apply(watcher::Event::InitApply(meta("a", "y")));
        known.apply(watcher::Event::InitApply(meta("c", "z")));
        assert_eq!(
            known.apply(watcher::Event::<ConfigMap>::InitDone),
            [key("b", "x")]
        );
        assert_eq!(known.live.len(), 2);
    }
}
