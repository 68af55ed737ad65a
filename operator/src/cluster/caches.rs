//! Watch caches: what reconcilers read instead of the apiserver. Each cache is filled by a watch
//! that also triggers reconciles (or is polled next to them), so a reconcile that changes
//! nothing sends no request, and one that acts sends only its writes.

use crate::cluster::cached_objects::{JobPod, JobState};
use crate::error::Result;
use crate::objects::{LABEL_MANAGED_BY, MANAGED_BY};
use crate::revisioned::jobs;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, ContainerStateTerminated};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// Objects per page of a watch's initial list (and relists). Every watch lists at once when the
/// operator starts, and a page is held whole (with managedFields) until its objects reach their
/// caches trimmed: kube's default of 500 made the start-up peak grow with the cluster.
pub const PAGE_SIZE: u32 = 50;

/// The watch config every watch of the operator starts from.
pub fn watch() -> watcher::Config {
    watcher::Config::default().page_size(PAGE_SIZE)
}

/// The events of a watch of `api` that fills `writer`'s cache: managedFields (often half of an
/// object) are dropped, and `trim` drops what the reconciler never reads.
pub fn reflected<K>(
    api: Api<K>,
    wc: watcher::Config,
    trim: impl FnMut(&mut K) + Send + 'static,
    writer: reflector::store::Writer<K>,
) -> impl futures::Stream<Item = std::result::Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
{
    let mut trim = trim;
    watcher(api, wc)
        .default_backoff()
        .modify(move |o: &mut K| {
            o.meta_mut().managed_fields = None;
            trim(o);
        })
        .reflect(writer)
}

/// A watch of `api` that fills a cache (see [`reflected`]), and its changed objects.
pub fn cached<K>(
    api: Api<K>,
    wc: watcher::Config,
    trim: impl FnMut(&mut K) + Send + 'static,
) -> (
    Store<K>,
    impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
{
    let (store, writer) = reflector::store();
    (store, reflected(api, wc, trim, writer).touched_objects())
}

/// A cache, and the changed objects of the watch that fills it, for one consumer.
pub struct Feed<K: Resource<DynamicType = ()> + 'static> {
    pub store: Store<K>,
    pub events: Events<K>,
    /// The cache has had its first list. (Not `Store::wait_until_ready`: it wakes only the last
    /// of the tasks waiting on it, and a controller built on the store waits on it already.)
    pub ready: Readiness,
}

/// One watch of `api` (trimmed as in [`cached`]) feeding `N` consumers: one cache they all
/// read, and each its own stream of every changed object, deletions included. Where two
/// controllers read the same kind (Corpora: their controller and the HybridModels'), each object
/// is held once. (kube's shared reflector streams do not pass deletions, which the HybridModel
/// controller acts on.) A watch error is logged here; the watch retries with backoff.
pub fn shared<K, const N: usize>(
    api: Api<K>,
    wc: watcher::Config,
    trim: impl FnMut(&mut K) + Send + 'static,
) -> [Feed<K>; N]
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let events = reflected(api, wc, trim, writer);
    let (listed, ready) = tokio::sync::watch::channel(false);
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..N)
        .map(|_| futures::channel::mpsc::unbounded::<K>())
        .unzip();
    tokio::spawn(async move {
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            let changed = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))
                | Ok(watcher::Event::Delete(o)) => Some(o),
                Ok(watcher::Event::InitDone) => {
                    let _ = listed.send(true);
                    None
                }
                Ok(watcher::Event::Init) => None,
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                    None
                }
            };
            if let Some(obj) = changed {
                for tx in &senders {
                    let _ = tx.unbounded_send(obj.clone());
                }
            }
            // Every consumer stopped (the controllers shut down): so does the watch.
            if senders.iter().all(|tx| tx.is_closed()) {
                break;
            }
        }
    });
    let mut receivers = receivers.into_iter();
    std::array::from_fn(|_| Feed {
        store: store.clone(),
        events: receivers
            .next()
            .map(|rx| rx.map(Ok).boxed())
            .unwrap_or_else(|| futures::stream::empty().boxed()),
        ready: Readiness(ready.clone()),
    })
}

/// No trimming beyond managedFields.
pub fn keep<K>(_: &mut K) {}

/// A Job's pod reduced further than its type ([`JobPod`]) does: the metadata a reconciler reads
/// to find a Job's newest pod (name, labels, creation time), and the conditions that tell why
/// it is stuck.
pub fn trim_job_pod(p: &mut JobPod) {
    p.metadata.annotations = None;
    p.metadata.owner_references = None;
    if let Some(state) = p.status.as_mut() {
        state.trim_conditions();
    }
}

/// A serving pod without the conditions and long crash messages no reconciler reads.
pub fn trim_serving_pod(p: &mut crate::cluster::cached_objects::ServingPod) {
    p.metadata.owner_references = None;
    if let Some(state) = p.status.as_mut() {
        state.trim_conditions();
        state.trim_messages();
    }
}

/// In-memory only: the annotation under which a cached Deployment keeps its pod template as JSON
/// text ([`compact_deployment`]). Cached objects are never written back, so it never reaches the
/// apiserver.
pub const CACHED_TEMPLATE: &str = "hybrid.dev/cached-pod-template";

/// A Deployment with its pod template held as JSON text. The template is what the reconciler
/// compares with the one it wants (`apply`, through [`live_json`]); typed, it is most of the
/// Deployment's memory (k8s-openapi's structs hold every optional field inline: 3 KiB per
/// volume, 2 KiB per container, set or not), as text a tenth of it.
pub fn compact_deployment(d: &mut k8s_openapi::api::apps::v1::Deployment) {
    let Some(spec) = d.spec.as_mut() else {
        return;
    };
    let template = std::mem::take(&mut spec.template);
    match serde_json::to_string(&template) {
        Ok(json) => {
            d.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(CACHED_TEMPLATE.to_owned(), json);
        }
        // Not expected for an object just deserialized; keep it typed.
        Err(_) => spec.template = template,
    }
}

/// A cached object as JSON, as the apiserver has it: a [`compact_deployment`]'s pod template is
/// put back in place.
pub fn live_json<K: serde::Serialize>(obj: &K) -> serde_json::Result<serde_json::Value> {
    let mut value = serde_json::to_value(obj)?;
    let stashed = value
        .pointer_mut("/metadata/annotations")
        .and_then(|a| a.as_object_mut())
        .and_then(|a| a.remove(CACHED_TEMPLATE));
    if let Some(serde_json::Value::String(json)) = stashed
        && let Some(spec) = value.pointer_mut("/spec").and_then(|s| s.as_object_mut())
    {
        spec.insert("template".to_owned(), serde_json::from_str(&json)?);
    }
    Ok(value)
}

/// The objects of a feed whose spec changed (a new generation), new objects, and deleted ones:
/// for a reconciler that reads only the spec of this kind, status writes are not worth a
/// reconcile. A feed passes deletions as plain objects; one its cache no longer holds is gone.
pub fn spec_changes<K>(feed: Feed<K>) -> Feed<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let Feed {
        store,
        events,
        ready,
    } = feed;
    let mut filter = SpecFilter::default();
    let cache = store.clone();
    let events = events
        .filter(move |event| {
            let pass = match event {
                Ok(o) => filter.pass(o, cache.get(&ObjectRef::from_obj(o)).is_some()),
                Err(_) => true,
            };
            futures::future::ready(pass)
        })
        .boxed();
    Feed {
        store,
        events,
        ready,
    }
}

/// Remembers each object's uid and generation, to tell spec changes from status writes.
struct SpecFilter<K: Resource<DynamicType = ()>> {
    seen: HashMap<ObjectRef<K>, (Option<String>, Option<i64>)>,
}

impl<K: Resource<DynamicType = ()>> Default for SpecFilter<K> {
    fn default() -> Self {
        Self {
            seen: HashMap::new(),
        }
    }
}

impl<K: Resource<DynamicType = ()>> SpecFilter<K> {
    /// `cached`: the object is still in the cache (it was not deleted). A deleted object passes;
    /// so does one recreated under the same name (a new uid).
    fn pass(&mut self, o: &K, cached: bool) -> bool {
        let key = ObjectRef::from_obj(o);
        if !cached {
            self.seen.remove(&key);
            return true;
        }
        let id = (o.meta().uid.clone(), o.meta().generation);
        self.seen.insert(key, id.clone()) != Some(id)
    }
}

/// True once every cache has had its first list (until then a missing object would read as
/// absent), for any number of waiters. `Store::wait_until_ready` wakes only the last of several
/// tasks waiting on it at once, so one task waits and reconciles wait for its signal.
#[derive(Clone)]
pub struct Readiness(tokio::sync::watch::Receiver<bool>);

impl Readiness {
    pub fn after(all_ready: impl Future<Output = ()> + Send + 'static) -> Self {
        let (ready, readiness) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            all_ready.await;
            let _ = ready.send(true);
        });
        Self(readiness)
    }

    pub async fn wait(&self) {
        // Err: the waiting task is gone, which it is only after signalling (or a panic).
        let _ = self.0.clone().wait_for(|ready| *ready).await;
    }
}

/// The ConfigMaps sources may name, for the Corpus and Adapter controllers: users' ConfigMaps
/// (the operator's own, runtime and training configs, are never sources).
pub fn source_config_maps(client: &Client) -> [Feed<ConfigMap>; 2] {
    shared(
        Api::all(client.clone()),
        watch().labels(&format!("{LABEL_MANAGED_BY}!={MANAGED_BY}")),
        keep,
    )
}

/// What the Corpus and Adapter reconcilers read: the Jobs the operator started for that kind
/// (index or training, scan and prune), their pods (for termination messages), and the
/// ConfigMaps sources name.
#[derive(Clone)]
pub struct OwnerCaches {
    jobs: Store<JobState>,
    pods: Store<JobPod>,
    config_maps: Store<ConfigMap>,
    readiness: Readiness,
}

/// A watch's changed objects, boxed.
pub type Events<K> = futures::stream::BoxStream<'static, std::result::Result<K, watcher::Error>>;

/// The streams that fill [`OwnerCaches`]; the controller must poll all three.
pub struct OwnerStreams {
    pub jobs: Events<JobState>,
    pub pods: Events<JobPod>,
    pub config_maps: Events<ConfigMap>,
}

impl OwnerCaches {
    /// Caches of the Jobs and pods labelled `owner_label` by the operator, with the source
    /// ConfigMaps of `config_maps` ([`source_config_maps`]).
    pub fn watch(
        client: &Client,
        owner_label: &str,
        config_maps: Feed<ConfigMap>,
    ) -> (Self, OwnerStreams) {
        let owned = || watch().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY},{owner_label}"));
        let (jobs, job_events) = cached(Api::all(client.clone()), owned(), keep);
        let (pods, pod_events) = cached(Api::all(client.clone()), owned(), trim_job_pod);
        let Feed {
            store: config_maps,
            events: config_map_events,
            ready: config_maps_ready,
        } = config_maps;
        let (j, p) = (jobs.clone(), pods.clone());
        let readiness = Readiness::after(async move {
            let _ = j.wait_until_ready().await;
            let _ = p.wait_until_ready().await;
            config_maps_ready.wait().await;
        });
        (
            Self {
                jobs,
                pods,
                config_maps,
                readiness,
            },
            OwnerStreams {
                jobs: job_events.boxed(),
                pods: pod_events.boxed(),
                config_maps: config_map_events,
            },
        )
    }

    pub async fn ready(&self) {
        self.readiness.wait().await
    }

    pub fn job(&self, ns: &str, name: &str) -> Option<Arc<JobState>> {
        self.jobs.get(&ObjectRef::new(name).within(ns))
    }

    pub fn config_map(&self, ns: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.config_maps.get(&ObjectRef::new(name).within(ns))
    }

    /// Jobs in `ns` whose labels pass `keep`.
    pub fn jobs(
        &self,
        ns: &str,
        keep: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
    ) -> Vec<Arc<JobState>> {
        self.jobs
            .state()
            .into_iter()
            .filter(|j| j.namespace().as_deref() == Some(ns) && keep(j.labels()))
            .collect()
    }

    /// The Jobs that build `owner`'s revisions (labelled `label=owner`); its scan Jobs are left
    /// to the reconcile that reads their result, and its prune Jobs to their TTL.
    pub fn owned_jobs(&self, ns: &str, label: &str, owner: &str) -> Vec<JobState> {
        let owner = crate::objects::label_value(owner);
        self.jobs(ns, |labels| {
            labels.get(label) == Some(&owner)
                && !matches!(
                    labels
                        .get(crate::objects::LABEL_COMPONENT)
                        .map(String::as_str),
                    Some("scan" | "prune")
                )
        })
        .into_iter()
        .map(|j| (*j).clone())
        .collect()
    }

    /// The cached pods of a Job.
    fn job_pods(&self, ns: &str, job_name: &str) -> Vec<Arc<JobPod>> {
        self.pods
            .state()
            .into_iter()
            .filter(|p| {
                p.namespace().as_deref() == Some(ns)
                    && p.labels().get(jobs::JOB_NAME_LABEL).map(String::as_str) == Some(job_name)
            })
            .collect()
    }

    /// Why the Job's newest pod makes no progress, if it is stuck.
    pub fn stuck(&self, ns: &str, job_name: &str) -> Option<crate::stuck::Stuck> {
        let pods = self.job_pods(ns, job_name);
        let newest = pods
            .iter()
            .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
        newest.stuck()
    }

    /// The terminated state of `container` in the Job's newest pod. A finished Job's pod can
    /// reach the cache a moment after the Job does; then it is read from the apiserver.
    pub async fn terminated(
        &self,
        client: &Client,
        ns: &str,
        job_name: &str,
        container: &str,
    ) -> Result<Option<ContainerStateTerminated>> {
        let pods = self.job_pods(ns, job_name);
        let cached = jobs::newest_terminated(pods.iter().map(|p| &**p), container);
        match cached {
            Some(state) => Ok(Some(state)),
            None => {
                crate::cluster::job_api::terminated(
                    &Api::namespaced(client.clone(), ns),
                    job_name,
                    container,
                )
                .await
            }
        }
    }
}

/// The controller of a kind that builds things with Jobs (Corpus: index Jobs, Adapter: training
/// Jobs): triggered by its objects, its Jobs (`owner_label` selects them and their pods), and
/// the ConfigMaps its objects name (`references`); reconciles read [`OwnerCaches`].
pub async fn run_owner_controller<K, R, F>(
    ctx: Arc<crate::context::Context>,
    kind: &'static str,
    owner_label: &str,
    objects: Feed<K>,
    config_maps: Feed<ConfigMap>,
    references: fn(&K, &str) -> bool,
    reconcile: R,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    R: Fn(Arc<K>, Arc<crate::context::Context>, OwnerCaches) -> F + Send + Sync + 'static,
    F: Future<Output = Result<kube::runtime::controller::Action>> + Send + 'static,
{
    use kube::runtime::controller::{self, Controller};
    let Feed {
        store: objects,
        events,
        // The controller built on this store waits for its first list itself.
        ready: _,
    } = objects;
    let (caches, streams) = OwnerCaches::watch(&ctx.client, owner_label, config_maps);
    let store = objects.clone();
    let owners = objects.clone();
    let owner_label = owner_label.to_owned();
    Controller::for_stream(events, objects)
        .with_config(controller::Config::default().concurrency(ctx.settings.concurrency))
        .owns_stream(streams.jobs)
        .watches_stream(streams.config_maps, move |cm: ConfigMap| {
            let (ns, name) = (cm.metadata.namespace, cm.metadata.name.unwrap_or_default());
            store
                .state()
                .iter()
                .filter(|o| o.meta().namespace == ns && references(o, &name))
                .map(|o| ObjectRef::from_obj(&**o))
                .collect::<Vec<_>>()
        })
        // A pod that gets stuck (or unstuck) changes its owner's status; a finished pod is
        // acted on when its Job finishes, which the Job's own event triggers.
        .watches_stream(streams.pods, move |pod: JobPod| {
            owner_of(&owners, &owner_label, &pod)
        })
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
        .run(
            move |obj, ctx| reconcile(obj, ctx, caches.clone()),
            crate::context::error_policy(kind),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The object a Job pod belongs to, by its owner label (`label`): the label is the owner's name
/// unless that name is too long for a label, so the cache is looked up directly and scanned
/// only for long names (and pods whose owner is gone).
fn owner_of<K: Resource<DynamicType = ()> + Clone>(
    store: &Store<K>,
    label: &str,
    pod: &JobPod,
) -> Vec<ObjectRef<K>> {
    let (Some(ns), Some(value)) = (pod.namespace(), pod.labels().get(label)) else {
        return Vec::new();
    };
    let direct = ObjectRef::new(value).within(&ns);
    if store.get(&direct).is_some() {
        return vec![direct];
    }
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns.as_str()))
        .filter(|o| {
            crate::objects::label_value(o.meta().name.as_deref().unwrap_or_default()) == *value
        })
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybrid_crds::ServingPolicy;

    fn policy(name: &str, generation: i64, used_by: &str) -> ServingPolicy {
        let mut p: ServingPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "hybrid.dev/v1alpha1", "kind": "ServingPolicy",
            "metadata": {"name": name, "namespace": "ns", "generation": generation},
            "spec": {"latency": {"p95Ms": 2500}}
        }))
        .expect("policy");
        p.metadata.uid = Some("uid-1".into());
        p.status =
            Some(serde_json::from_value(serde_json::json!({"usedBy": [used_by]})).expect("status"));
        p
    }

    #[test]
    fn a_compact_deployment_reads_back_as_it_was() {
        use k8s_openapi::api::apps::v1::Deployment;
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "m", "namespace": "ns", "generation": 3,
                         "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "m"}},
                     "template": {"metadata": {"labels": {"app": "m"}},
                                  "spec": {"containers": [{"name": "serve", "image": "img:1"}],
                                           "volumes": [{"name": "config", "configMap": {"name": "m"}}]}}},
            "status": {"replicas": 2, "availableReplicas": 1}
        }))
        .expect("deployment");
        let mut compact = d.clone();
        compact_deployment(&mut compact);
        assert_eq!(compact.spec.as_ref().and_then(|s| s.replicas), Some(2));
        assert_eq!(
            compact.spec.as_ref().map(|s| s.template.spec.is_none()),
            Some(true)
        );
        assert_eq!(
            compact.status.as_ref().and_then(|s| s.available_replicas),
            Some(1)
        );
        assert_eq!(
            live_json(&compact).expect("json"),
            serde_json::to_value(&d).expect("json")
        );
        // An object that was never compacted reads as itself.
        assert_eq!(
            live_json(&d).expect("json"),
            serde_json::to_value(&d).expect("json")
        );
    }

    #[test]
    fn a_job_pod_triggers_the_object_its_owner_label_names() {
        use hybrid_crds::Corpus;
        let long = "a-corpus-name-much-longer-than-the-sixty-three-characters-a-label-holds";
        let (store, mut writer) = reflector::store::<Corpus>();
        for name in ["notes", long] {
            let c = crate::objects::fixtures::corpus(
                &crate::objects::fixtures::FINANCE_CORPUS
                    .replace("name: finance-notes", &format!("name: {name}")),
            );
            writer.apply_watcher_event(&watcher::Event::Apply(c));
        }
        let pod = |label: &str, ns: &str| -> JobPod {
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": "p", "namespace": ns,
                "labels": {"hybrid.dev/corpus": label}}}),
            )
            .expect("pod")
        };
        let names = |pod: &JobPod| -> Vec<String> {
            owner_of(&store, "hybrid.dev/corpus", pod)
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(names(&pod("notes", "demo")), ["notes"]);
        assert_eq!(
            names(&pod(&crate::objects::label_value(long), "demo")),
            [long]
        );
        assert!(names(&pod("notes", "other")).is_empty());
        assert!(names(&pod("gone", "demo")).is_empty());
    }

    #[test]
    fn spec_changes_pass_new_specs_and_deletions_not_status_writes() {
        let mut filter = SpecFilter::default();
        let recreated = {
            let mut p = policy("a", 1, "m0");
            p.metadata.uid = Some("uid-2".into());
            p
        };
        // (object, still in the cache, passes)
        let steps = [
            (policy("a", 1, "m0"), true, true),  // listed
            (policy("a", 1, "m1"), true, false), // status only
            (policy("b", 1, "m0"), true, true),  // another object
            (policy("a", 2, "m1"), true, true),  // spec edit
            (policy("a", 2, "m2"), true, false), // status only
            (policy("a", 2, "m2"), false, true), // deleted
            (policy("a", 1, "m0"), true, true),  // recreated, same uid, seen as new
            (recreated, true, true),             // recreated with a new uid, same generation
        ];
        for (i, (p, cached, passes)) in steps.into_iter().enumerate() {
            assert_eq!(filter.pass(&p, cached), passes, "step {i}");
        }
    }
}
