//! HybridModel controller: resolve the Corpus, Adapter and ServingPolicy references, validate,
//! build the runtime config, Deployment, Service and PDB, apply them, report status.

pub mod loaded_report;
pub mod serving;

use crate::cluster::cached_objects::ServingPod;
use crate::cluster::caches::{self, Feed, Readiness, cached, keep};
use crate::context::{Context, RESYNC, error_policy};
use crate::error::{Error, Result};
use crate::objects::{
    LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_MODEL, MANAGED_BY, label_value, name_of, namespace_of,
};
use crate::status::{FIELD_MANAGER, Health, apply_status, set_condition, set_health};
use crate::stuck::{self, Stuck};
use futures::StreamExt;
use hybrid_crds::conditions::{reasons, types};
use hybrid_crds::model::{AdapterLineage, IndexLineage, Lineage, LoadedRevisions, NamedRevision};
use hybrid_crds::{Adapter, Corpus, HybridModel, HybridModelStatus, ServingPolicy};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use loaded_report::LoadedReport;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serving::{
    RuntimeRbac, SERVING_PROGRESS_DEADLINE_SECONDS, ServingInputs, ServingObjects, endpoint,
    selector_string, serving_objects, top_k,
};
use std::sync::Arc;

pub const KIND: &str = "HybridModel";
/// `Serving` False while ready pods have not all reported the desired serving revision.
pub const REVISIONS_LOADING: &str = "RevisionsLoading";

/// What the reconciler reads from watch caches instead of the apiserver: its references and
/// the objects it owns. Each cache is filled by the same watch that triggers reconciles, so a
/// HybridModel costs no reads per reconcile; only changes are written.
#[derive(Clone)]
struct Caches {
    policies: Store<ServingPolicy>,
    corpora: Store<Corpus>,
    adapters: Store<Adapter>,
    deployments: Store<Deployment>,
    services: Store<Service>,
    pdbs: Store<PodDisruptionBudget>,
    config_maps: Store<ConfigMap>,
    pods: Store<ServingPod>,
}

impl Caches {
    /// Every cache has had its first list; `shared`: those of the caches shared with other
    /// controllers (models, policies, Corpora, Adapters), which signal it themselves.
    fn readiness(&self, shared: [Readiness; 4]) -> Readiness {
        let caches = self.clone();
        Readiness::after(async move {
            for ready in shared {
                ready.wait().await;
            }
            let _ = caches.deployments.wait_until_ready().await;
            let _ = caches.services.wait_until_ready().await;
            let _ = caches.pdbs.wait_until_ready().await;
            let _ = caches.config_maps.wait_until_ready().await;
            let _ = caches.pods.wait_until_ready().await;
        })
    }
}

/// `models`, `policies`, `corpora`, `adapters`: caches and watches shared with the other
/// controllers and the autoscaler.
pub async fn run(
    ctx: Arc<Context>,
    models: Feed<HybridModel>,
    policies: Feed<ServingPolicy>,
    corpora: Feed<Corpus>,
    adapters: Feed<Adapter>,
) {
    let client = ctx.client.clone();
    let Feed {
        store: models,
        events: model_events,
        ready: models_ready,
    } = models;
    let model_events = {
        let (ctx, models) = (ctx.clone(), models.clone());
        model_events.inspect(move |event| {
            // A deleted model (every one, when its namespace goes) makes the next reconcile in
            // its namespace check the runtime RBAC again.
            if let Ok(m) = event
                && models.get(&ObjectRef::from_obj(m)).is_none()
            {
                ctx.runtime_rbac.forget(&m.namespace().unwrap_or_default());
            }
        })
    };
    // Owned objects: all carry the serving labels.
    let (deployments, deployment_events) = cached(
        Api::<Deployment>::all(client.clone()),
        serving(),
        caches::compact_deployment,
    );
    let (services, service_events) = cached(Api::<Service>::all(client.clone()), serving(), keep);
    let (pdbs, pdb_events) = cached(
        Api::<PodDisruptionBudget>::all(client.clone()),
        serving(),
        keep,
    );
    let (config_maps, config_map_events) =
        cached(Api::<ConfigMap>::all(client.clone()), serving(), keep);
    // Serving pods: readiness, their loaded-revisions reports, and what keeps them from running.
    let (pods, pod_events) = cached(
        Api::<ServingPod>::all(client.clone()),
        serving(),
        caches::trim_serving_pod,
    );
    let Feed {
        store: corpora,
        events: corpus_events,
        ready: corpora_ready,
    } = corpora;
    let Feed {
        store: adapters,
        events: adapter_events,
        ready: adapters_ready,
    } = adapters;
    // A model reads only the policy's spec: its status (`usedBy`, written as models come and
    // go) would otherwise reconcile every model using it on each write.
    let Feed {
        store: policies,
        events: policy_events,
        ready: policies_ready,
    } = caches::spec_changes(policies);
    let caches = Caches {
        policies,
        corpora,
        adapters,
        deployments,
        services,
        pdbs,
        config_maps,
        pods,
    };
    let (s0, s1, s2, s3) = (
        models.clone(),
        models.clone(),
        models.clone(),
        models.clone(),
    );
    let readiness = caches.readiness([models_ready, policies_ready, corpora_ready, adapters_ready]);
    Controller::for_stream(model_events, models)
        .with_config(controller::Config::default().concurrency(ctx.settings.concurrency))
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .owns_stream(pdb_events)
        .owns_stream(config_map_events)
        // Pods belong to ReplicaSets, so they are mapped back by the model label.
        .watches_stream(pod_events, move |p: ServingPod| model_of_pod(&s0, &p))
        .watches_stream(corpus_events, move |c: Corpus| {
            referencing(&s1, &c, |m, name| {
                m.spec.corpus_refs.iter().any(|r| r.name == name)
            })
        })
        .watches_stream(adapter_events, move |a: Adapter| {
            referencing(&s2, &a, |m, name| {
                m.spec.adapter_refs.iter().any(|r| r.name == name)
            })
        })
        .watches_stream(policy_events, move |p: ServingPolicy| {
            referencing(&s3, &p, |m, name| m.spec.serving_policy_ref.name == name)
        })
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
        .run(
            move |model, ctx| reconcile(model, ctx, caches.clone(), readiness.clone()),
            error_policy(KIND),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// HybridModels in the same namespace whose spec references `obj`.
fn referencing<K: Resource>(
    store: &Store<HybridModel>,
    obj: &K,
    refers: impl Fn(&HybridModel, &str) -> bool,
) -> Vec<ObjectRef<HybridModel>> {
    let (ns, name) = (
        obj.meta().namespace.clone(),
        obj.meta().name.clone().unwrap_or_default(),
    );
    store
        .state()
        .iter()
        .filter(|m| m.metadata.namespace == ns && refers(m, &name))
        .map(|m| ObjectRef::from_obj(&**m))
        .collect()
}

/// The HybridModel a serving pod belongs to, by its model label: the label is the model's name
/// unless that name is too long for a label, so the cache is looked up directly and scanned
/// only for long names (and pods whose model is gone).
fn model_of_pod(store: &Store<HybridModel>, pod: &ServingPod) -> Vec<ObjectRef<HybridModel>> {
    let (Some(ns), Some(label)) = (pod.namespace(), pod.labels().get(LABEL_MODEL)) else {
        return Vec::new();
    };
    let direct = ObjectRef::new(label).within(&ns);
    if store.get(&direct).is_some() {
        return vec![direct];
    }
    store
        .state()
        .iter()
        .filter(|m| m.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|m| label_value(m.metadata.name.as_deref().unwrap_or_default()) == *label)
        .map(|m| ObjectRef::from_obj(&**m))
        .collect()
}

fn get_ref<K>(store: &Store<K>, ns: &str, kind: &'static str, name: &str) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store
        .get(&ObjectRef::new(name).within(ns))
        .map(|k| (*k).clone())
        .ok_or_else(|| Error::ReferenceNotFound {
            kind,
            name: name.to_owned(),
        })
}

fn resolve(
    caches: &Caches,
    ns: &str,
    model: &HybridModel,
) -> Result<(ServingPolicy, Vec<Adapter>, Vec<Corpus>)> {
    let policy = get_ref(
        &caches.policies,
        ns,
        "ServingPolicy",
        &model.spec.serving_policy_ref.name,
    )?;
    let adapters = (model.spec.adapter_refs.iter())
        .map(|r| get_ref(&caches.adapters, ns, "Adapter", &r.name))
        .collect::<Result<_>>()?;
    let corpora = (model.spec.corpus_refs.iter())
        .map(|r| get_ref(&caches.corpora, ns, "Corpus", &r.name))
        .collect::<Result<_>>()?;
    Ok((policy, adapters, corpora))
}

/// Watch config for what serves a model (pods, and the objects the operator applies for it): the
/// operator's label and the serving component.
fn serving() -> watcher::Config {
    caches::watch().labels(&format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_COMPONENT}=serving"
    ))
}

/// Server-side applies `obj` unless the live object already has every field it sets with the
/// same value. An unchanged apply would be a no-op for the object, but it is still a write
/// request (audit log, apiserver load, an etcd round trip); a resync must issue none.
///
/// The live object is read from `cache` (the watch of that kind); `None` reads it from the
/// apiserver. A cache a moment behind only costs an apply that changes nothing.
async fn apply<K>(ctx: &Context, cache: Option<&Store<K>>, ns: &str, obj: &K) -> Result<Arc<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let name = obj
        .meta()
        .name
        .as_deref()
        .ok_or(Error::MissingObjectKey("metadata.name"))?;
    let api = Api::<K>::namespaced(ctx.client.clone(), ns);
    let mut body = serde_json::to_value(obj)?;
    let live = match cache {
        Some(store) => store.get(&ObjectRef::new(name).within(ns)),
        None => api.get_opt(name).await?.map(Arc::new),
    };
    if let Some(live) = live
        && crate::objects::is_applied(&body, &caches::live_json(&*live)?)
    {
        return Ok(live);
    }
    // SSA needs apiVersion and kind in the body.
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    Ok(Arc::new(
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?,
    ))
}

/// The runtime's ServiceAccount, Role and RoleBinding: one set per namespace, so checked (read,
/// and applied if changed) by the first reconcile in a namespace and then again only after
/// [`RESYNC`] or a HybridModel deletion there. One check runs at a time per namespace.
async fn apply_runtime_rbac(ctx: &Context, ns: &str, rbac: &RuntimeRbac) -> Result<()> {
    let digest = serde_json::to_string(&rbac_parts(rbac))?;
    let slot = ctx.runtime_rbac.slot(ns);
    let mut checked = slot.lock().await;
    if checked
        .as_ref()
        .is_some_and(|c| c.is_fresh(&digest, RESYNC))
    {
        return Ok(());
    }
    apply(ctx, None, ns, &rbac.service_account).await?;
    apply(ctx, None, ns, &rbac.role).await?;
    apply(ctx, None, ns, &rbac.role_binding).await?;
    *checked = Some(crate::context::Checked::now(digest));
    Ok(())
}

fn rbac_parts(rbac: &RuntimeRbac) -> (&ServiceAccount, &Role, &RoleBinding) {
    (&rbac.service_account, &rbac.role, &rbac.role_binding)
}

/// [`apply`] for the ServiceMonitor, which has no typed struct here.
async fn apply_service_monitor(ctx: &Context, ns: &str, model: &HybridModel) -> Result<()> {
    let gvk = kube::api::GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor");
    let resource = kube::api::ApiResource::from_gvk(&gvk);
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), ns, &resource);
    let mut body = crate::hybridmodel::serving::service_monitor(model)?;
    let name = name_of(model)?;
    if let Some(live) = api.get_opt(&name).await?
        && crate::objects::is_applied(&body, &serde_json::to_value(&live)?)
    {
        return Ok(());
    }
    body["apiVersion"] = "monitoring.coreos.com/v1".into();
    body["kind"] = "ServiceMonitor".into();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

async fn reconcile(
    model: Arc<HybridModel>,
    ctx: Arc<Context>,
    caches: Caches,
    readiness: Readiness,
) -> Result<Action> {
    readiness.wait().await;
    let _timer = ctx.metrics.reconcile_timer(KIND);
    let ns = namespace_of(&*model)?;
    let name = name_of(&*model)?;
    let api: Api<HybridModel> = Api::namespaced(ctx.client.clone(), &ns);
    let current = model.status.clone().unwrap_or_default();
    let now = crate::status::now();

    let built = match resolve(&caches, &ns, &model).and_then(|(policy, adapters, corpora)| {
        let objects = serving_objects(&ServingInputs {
            model: &model,
            policy: &policy,
            adapters: &adapters,
            corpora: &corpora,
            runtime_images: ctx.settings.runtime_images(),
        })?;
        Ok((objects, adapters, corpora, policy))
    }) {
        Ok(b) => b,
        Err(e) if !e.is_transient() => {
            let status = blocked_status(&model, &current, &e, &now);
            ctx.metrics
                .record_status(KIND, &ns, &name, &status.conditions, None, &now);
            if apply_status(&api, &*model, model.status.as_ref(), &status).await? {
                let warning = !matches!(e, Error::DependencyNotReady { .. });
                ctx.event(&*model, warning, e.label(), "Resolve", e.to_string())
                    .await;
            }
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };
    let (objects, adapters, corpora, policy) = built;

    // The ServiceAccount must exist before the Deployment's pods are admitted.
    apply_runtime_rbac(&ctx, &ns, &objects.rbac).await?;
    apply(&ctx, Some(&caches.config_maps), &ns, &objects.config_map).await?;
    apply(&ctx, Some(&caches.services), &ns, &objects.service).await?;
    apply(&ctx, Some(&caches.pdbs), &ns, &objects.pdb).await?;
    let deployment = apply(&ctx, Some(&caches.deployments), &ns, &objects.deployment).await?;
    if ctx.settings.service_monitors {
        apply_service_monitor(&ctx, &ns, &model).await?;
    }
    let label = label_value(&name);
    let pods = caches.pods.state_filter(|p| {
        p.metadata.namespace.as_deref() == Some(&ns) && p.labels().get(LABEL_MODEL) == Some(&label)
    });
    // The cache holds serving pods only (its watch selects the component).
    let pods: Vec<&ServingPod> = pods.iter().map(|p| &**p).collect();
    let report = loaded_report::fold(&pods, &objects.serving_revision);
    let stuck = crate::stuck::first_stuck(&pods);

    let status = serving_status(
        &model,
        &current,
        &objects,
        &deployment,
        &report,
        stuck.as_ref(),
        &adapters,
        &corpora,
        &policy,
        &name,
        &ns,
        &now,
    );
    let rolled_out = crate::status::is_true(&status.conditions, types::SERVING);
    ctx.metrics
        .record_status(KIND, &ns, &name, &status.conditions, None, &now);
    if apply_status(&api, &*model, model.status.as_ref(), &status).await?
        && let Some((reason, note)) = stuck_event(&current, &status)
    {
        ctx.event(&*model, true, &reason, "Rollout", note).await;
    }
    Ok(if rolled_out {
        Action::requeue(RESYNC)
    } else {
        // Deployment and pod changes arrive through the watches; this is the safety net.
        Action::requeue(std::time::Duration::from_secs(30))
    })
}

/// Status when references cannot be resolved or validated: missing references and base-model
/// mismatches are Stalled; dependencies without an active revision yet are Reconciling.
/// What is already deployed is left running as it is.
pub fn blocked_status(
    model: &HybridModel,
    current: &HybridModelStatus,
    e: &Error,
    now: &Time,
) -> HybridModelStatus {
    let generation = model.metadata.generation;
    let mut status = current.clone();
    status.observed_generation = generation;
    let health = match e {
        Error::DependencyNotReady { .. } => Health::reconciling(e.label(), e.to_string()),
        _ => Health::stalled(e.label(), e.to_string()),
    };
    set_health(&mut status.conditions, &health, generation, now);
    status
}

/// The Deployment controller's verdict on a rollout that made no progress within its
/// `progressDeadlineSeconds`: its message, when it gave up.
pub fn progress_deadline_exceeded(deployment: &Deployment) -> Option<String> {
    let conditions = deployment.status.as_ref()?.conditions.as_ref()?;
    let c = conditions.iter().find(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some(stuck::reasons::PROGRESS_DEADLINE_EXCEEDED)
    })?;
    Some(c.message.clone().unwrap_or_default())
}

/// The warning Event worth publishing once for a status write: the `Serving` condition turned
/// to a stuck pod's reason (or a new one), or the model became Stalled.
pub fn stuck_event(
    before: &HybridModelStatus,
    after: &HybridModelStatus,
) -> Option<(String, String)> {
    let reason_of = |s: &HybridModelStatus, t: &str| {
        crate::status::find(&s.conditions, t).map(|c| (c.reason.clone(), c.status.clone()))
    };
    let now = crate::status::find(&after.conditions, types::SERVING)?;
    if now.status == "True" || !stuck::is_stuck_reason(&now.reason) {
        return None;
    }
    let changed = reason_of(before, types::SERVING) != reason_of(after, types::SERVING)
        || reason_of(before, types::STALLED) != reason_of(after, types::STALLED);
    changed.then(|| (now.reason.clone(), now.message.clone()))
}

#[allow(clippy::too_many_arguments)]
pub fn serving_status(
    model: &HybridModel,
    current: &HybridModelStatus,
    objects: &ServingObjects,
    deployment: &Deployment,
    report: &LoadedReport,
    stuck: Option<&Stuck>,
    adapters: &[Adapter],
    corpora: &[Corpus],
    policy: &ServingPolicy,
    name: &str,
    ns: &str,
    now: &Time,
) -> HybridModelStatus {
    let generation = model.metadata.generation;
    let mut status = current.clone();
    status.observed_generation = generation;
    let ds = deployment.status.clone().unwrap_or_default();
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let available = ds.available_replicas.unwrap_or(0);
    let updated = ds.updated_replicas.unwrap_or(0);
    let current_generation = ds.observed_generation >= deployment.metadata.generation;
    status.replicas = Some(ds.replicas.unwrap_or(0));
    status.available_replicas = Some(available);
    status.selector = Some(selector_string(name));
    status.endpoint = Some(endpoint(name, ns));
    status.top_k = Some(top_k(model, policy));
    status.serving_revision = Some(objects.serving_revision.clone());
    status.desired = Some(LoadedRevisions {
        serving_revision: Some(objects.serving_revision.clone()),
        adapters: objects
            .config
            .adapters
            .iter()
            .map(|a| NamedRevision {
                name: a.name.clone(),
                revision: a.revision.clone(),
            })
            .collect(),
        indexes: objects
            .config
            .indexes
            .iter()
            .map(|i| NamedRevision {
                name: i.corpus.clone(),
                revision: i.revision.clone(),
            })
            .collect(),
        device: None,
    });
    status.lineage = Some(Lineage {
        adapters: adapters
            .iter()
            .filter_map(|a| {
                let active = a.status.as_ref()?.active_revision.as_ref()?;
                Some(AdapterLineage {
                    adapter: a.name_any(),
                    dataset_digest: active.dataset_digest.clone(),
                    training_job: active.job.clone(),
                    revision: active.revision.clone(),
                })
            })
            .collect(),
        indexes: corpora
            .iter()
            .filter_map(|c| {
                let active = c.status.as_ref()?.active_revision.as_ref()?;
                Some(IndexLineage {
                    corpus: c.name_any(),
                    content_revision: Some(active.content_revision.clone()),
                    index_job: active.job.clone(),
                    revision: active.revision.clone(),
                })
            })
            .collect(),
        serving_revision: Some(objects.serving_revision.clone()),
    });

    let incomplete = !current_generation || updated < wanted || available < wanted;
    let (serving, reason, message) = if wanted == 0 {
        (
            true,
            reasons::SUCCEEDED,
            "scaled to zero replicas".to_owned(),
        )
    } else if let Some(stuck) = stuck.filter(|_| incomplete) {
        let message = if available == 0 {
            format!("0/{wanted} serving pods available: {}", stuck.message)
        } else {
            format!(
                "{updated}/{wanted} pods updated, {available}/{wanted} available: {}; the {available} available pod(s) keep serving what they have loaded",
                stuck.message
            )
        };
        (false, stuck.reason, message)
    } else if available == 0 {
        (
            false,
            reasons::UNAVAILABLE,
            format!("0/{wanted} serving pods available"),
        )
    } else if incomplete {
        (
            false,
            reasons::ROLLING_OUT,
            format!("{updated}/{wanted} pods updated, {available}/{wanted} available"),
        )
    } else if !report.all_loaded {
        (false, REVISIONS_LOADING, report.message.clone())
    } else {
        (true, reasons::REVISIONS_LOADED, report.message.clone())
    };
    // Keep the last full report while pods restart or report nothing yet: it is still what
    // was last seen loaded, not a guess.
    if report.loaded.is_some() {
        status.loaded = report.loaded.clone();
    }
    // No new pod became available within the Deployment's progress deadline: a user must act
    // (a stuck pod's reason says how); a pod that becomes available later clears it by itself.
    let deadline = (!serving)
        .then(|| progress_deadline_exceeded(deployment))
        .flatten();
    let (reason, message) = match &deadline {
        Some(deadline) => (
            if stuck::is_stuck_reason(reason) {
                reason
            } else {
                stuck::reasons::PROGRESS_DEADLINE_EXCEEDED
            },
            format!(
                "{message}; the rollout made no progress for {} ({}: {deadline})",
                stuck::human(std::time::Duration::from_secs(
                    SERVING_PROGRESS_DEADLINE_SECONDS as u64
                )),
                stuck::reasons::PROGRESS_DEADLINE_EXCEEDED
            ),
        ),
        None => (reason, message),
    };
    set_condition(
        &mut status.conditions,
        types::SERVING,
        serving,
        reason,
        &message,
        generation,
        now,
    );
    let health = if serving {
        Health::ready(reason, message)
    } else if deadline.is_some() {
        Health::stalled(reason, message)
    } else {
        Health::reconciling(reason, message)
    };
    set_health(&mut status.conditions, &health, generation, now);
    if policy.spec.autoscaling.enabled {
        let (ok, reason, message) = crate::autoscaler::condition_of(status.autoscaler.as_ref());
        set_condition(
            &mut status.conditions,
            types::AUTOSCALING,
            ok,
            reason,
            &message,
            generation,
            now,
        );
    } else {
        set_condition(
            &mut status.conditions,
            types::AUTOSCALING,
            false,
            reasons::AUTOSCALING_DISABLED,
            "spec.replicas (or an HPA through /scale) decides replicas",
            generation,
            now,
        );
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures::model;
    use crate::status::{find, is_true};

    const MODEL: &str = r#"
apiVersion: hybrid.dev/v1alpha1
kind: HybridModel
metadata: {name: advisor, namespace: demo, uid: u1, generation: 3}
spec:
  model: {source: pvc://m/base.gguf}
  servingPolicyRef: {name: p}
"#;

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("ts"))
    }

    const POLICY: &str = "apiVersion: hybrid.dev/v1alpha1\nkind: ServingPolicy\nmetadata: {name: p, namespace: demo}\nspec: {latency: {p95Ms: 2500}}";

    /// A Deployment of 2 replicas with `available` of them available, `updated` on the current
    /// template, and `progressing` as its Progressing condition (status, reason).
    fn deployment(available: i32, updated: i32, progressing: Option<(&str, &str)>) -> Deployment {
        let conditions: Vec<serde_json::Value> = progressing
            .into_iter()
            .map(|(status, reason)| {
                serde_json::json!({"type": "Progressing", "status": status, "reason": reason,
                    "message": "ReplicaSet \"advisor-5d8f\" has timed out progressing."})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "advisor", "namespace": "demo", "generation": 4},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 4, "replicas": 2, "availableReplicas": available,
                "updatedReplicas": updated, "conditions": conditions}
        }))
        .expect("deployment")
    }

    fn pod(name: &str, status: serde_json::Value) -> ServingPod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "demo",
                "creationTimestamp": "1970-01-01T00:01:40Z",
                "labels": {"hybrid.dev/hybridmodel": "advisor"}},
            "status": status
        }))
        .expect("pod")
    }

    fn ready_pod() -> ServingPod {
        pod(
            "advisor-1111-old",
            serde_json::json!({"conditions": [{"type": "Ready", "status": "True"}]}),
        )
    }

    fn waiting_pod(reason: &str, message: &str) -> ServingPod {
        pod(
            "advisor-5d8f-new",
            serde_json::json!({"phase": "Pending",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "serve", "image": "ghcr.io/hybrid/runtime:nope",
                    "state": {"waiting": {"reason": reason, "message": message}}}]}),
        )
    }

    fn unschedulable_pod() -> ServingPod {
        pod(
            "advisor-5d8f-new",
            serde_json::json!({"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}),
        )
    }

    /// The status of MODEL served by `deployment` with these pods.
    fn rollout(deployment: &Deployment, pods: &[&ServingPod]) -> HybridModelStatus {
        let m = model(MODEL);
        let p = crate::objects::fixtures::policy(POLICY);
        let objects = serving_objects(&ServingInputs {
            model: &m,
            policy: &p,
            adapters: &[],
            corpora: &[],
            runtime_images: crate::objects::RuntimeImages {
                cpu: "ghcr.io/hybrid/runtime:1",
                cuda: "ghcr.io/hybrid/runtime:1-cuda",
            },
        })
        .expect("objects");
        let report = loaded_report::fold(pods, &objects.serving_revision);
        let stuck = stuck::first_stuck(pods);
        serving_status(
            &m,
            &HybridModelStatus::default(),
            &objects,
            deployment,
            &report,
            stuck.as_ref(),
            &[],
            &[],
            &p,
            "advisor",
            "demo",
            &t(500),
        )
    }

    #[test]
    fn an_unschedulable_serving_pod_shows_the_schedulers_message() {
        let s = rollout(&deployment(0, 2, None), &[&unschedulable_pod()]);
        let serving = find(&s.conditions, "Serving").expect("serving");
        assert_eq!(
            (serving.status.as_str(), serving.reason.as_str()),
            ("False", "Unschedulable")
        );
        assert_eq!(
            serving.message,
            "0/2 serving pods available: pod advisor-5d8f-new cannot be scheduled: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
        );
        assert_eq!(
            find(&s.conditions, "Ready").expect("r").reason,
            "Unschedulable"
        );
        assert!(is_true(&s.conditions, "Reconciling"));
        assert!(!is_true(&s.conditions, "Stalled"));
    }

    #[test]
    fn a_stuck_new_pod_says_the_old_ones_keep_serving() {
        let s = rollout(
            &deployment(1, 1, Some(("True", "ReplicaSetUpdated"))),
            &[
                &ready_pod(),
                &waiting_pod(
                    "ImagePullBackOff",
                    "Back-off pulling image \"ghcr.io/hybrid/runtime:nope\"",
                ),
            ],
        );
        let serving = find(&s.conditions, "Serving").expect("serving");
        assert_eq!(serving.reason, "ImagePullBackOff");
        assert_eq!(
            serving.message,
            "1/2 pods updated, 1/2 available: pod advisor-5d8f-new cannot pull image \"ghcr.io/hybrid/runtime:nope\": Back-off pulling image \"ghcr.io/hybrid/runtime:nope\"; the 1 available pod(s) keep serving what they have loaded"
        );
        assert!(!is_true(&s.conditions, "Stalled"));
    }

    #[test]
    fn past_the_progress_deadline_the_model_is_stalled_with_the_pods_reason() {
        let s = rollout(
            &deployment(1, 1, Some(("False", "ProgressDeadlineExceeded"))),
            &[
                &ready_pod(),
                &waiting_pod(
                    "CreateContainerConfigError",
                    "secret \"hf-token\" not found",
                ),
            ],
        );
        let stalled = find(&s.conditions, "Stalled").expect("stalled");
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "CreateContainerConfigError")
        );
        assert!(
            stalled.message.contains("secret \"hf-token\" not found")
                && stalled.message.contains("keep serving")
                && stalled
                    .message
                    .ends_with("the rollout made no progress for 15m (ProgressDeadlineExceeded: ReplicaSet \"advisor-5d8f\" has timed out progressing.)"),
            "{}",
            stalled.message
        );
        assert_eq!(
            find(&s.conditions, "Serving").expect("s").reason,
            "CreateContainerConfigError"
        );
        assert!(!is_true(&s.conditions, "Reconciling"));

        // No stuck pod to blame: the Deployment controller's reason.
        let s = rollout(
            &deployment(0, 2, Some(("False", "ProgressDeadlineExceeded"))),
            &[],
        );
        let stalled = find(&s.conditions, "Stalled").expect("stalled");
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "ProgressDeadlineExceeded")
        );
    }

    #[test]
    fn a_crash_looping_serving_pod_killed_for_memory_reads_oomkilled() {
        let crashing = pod(
            "advisor-5d8f-new",
            serde_json::json!({"conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "serve",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        let s = rollout(&deployment(0, 2, None), &[&crashing]);
        let serving = find(&s.conditions, "Serving").expect("serving");
        assert_eq!(serving.reason, "OOMKilled");
        assert!(
            serving
                .message
                .contains("last exit: OOMKilled, exit code 137"),
            "{}",
            serving.message
        );
    }

    #[test]
    fn a_finished_rollout_ignores_a_leftover_stuck_pod() {
        let s = rollout(
            &deployment(2, 2, Some(("True", "NewReplicaSetAvailable"))),
            &[&ready_pod(), &unschedulable_pod()],
        );
        assert_ne!(
            find(&s.conditions, "Serving").expect("s").reason,
            "Unschedulable"
        );
    }

    #[test]
    fn the_stuck_event_is_published_once_per_reason() {
        let before = HybridModelStatus::default();
        let after = rollout(&deployment(0, 2, None), &[&unschedulable_pod()]);
        let (reason, note) = stuck_event(&before, &after).expect("event");
        assert_eq!(reason, "Unschedulable");
        assert!(note.contains("0/3 nodes are available"), "{note}");
        assert_eq!(stuck_event(&after, &after), None, "same reason: no repeat");
        let rolling = rollout(&deployment(1, 1, None), &[&ready_pod()]);
        assert_eq!(stuck_event(&before, &rolling), None, "not stuck");
    }

    #[test]
    fn missing_reference_stalls_and_unready_dependency_reconciles() {
        let m = model(MODEL);
        let missing = Error::ReferenceNotFound {
            kind: "ServingPolicy",
            name: "p".into(),
        };
        let s = blocked_status(&m, &HybridModelStatus::default(), &missing, &t(1));
        assert!(is_true(&s.conditions, "Stalled"));
        assert_eq!(
            find(&s.conditions, "Ready").expect("r").reason,
            "ReferenceNotFound"
        );
        assert_eq!(s.observed_generation, Some(3));

        let waiting = Error::DependencyNotReady {
            kind: "Corpus",
            name: "c".into(),
            message: "no index revision yet".into(),
        };
        let s = blocked_status(&m, &s, &waiting, &t(2));
        assert!(is_true(&s.conditions, "Reconciling"));
        assert!(!is_true(&s.conditions, "Stalled"));
    }
}
