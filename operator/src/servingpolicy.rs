//! ServingPolicy controller: validates what admission cannot and reports which HybridModels use
//! the policy. The policy itself creates nothing; HybridModels read it.

use crate::cluster::caches::{self, Feed, Readiness};
use crate::context::{Context, RESYNC, error_policy};
use crate::error::{Error, Result};
use crate::objects::namespace_of;
use crate::status::{Health, apply_status, set_health};
use futures::StreamExt;
use hybrid_crds::conditions::reasons;
use hybrid_crds::{HybridModel, ServingPolicy, ServingPolicySpec};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use std::sync::Arc;

pub const KIND: &str = "ServingPolicy";

/// `models`: the HybridModels' cache and watch, shared with their controller.
pub async fn run(ctx: Arc<Context>, models: Feed<HybridModel>) {
    let client = ctx.client.clone();
    // `status.usedBy` needs only each model's policy reference: a model triggers its policy only
    // when its spec changes, it appears or it goes.
    let Feed {
        store: models,
        events: model_events,
        ready: readiness,
    } = caches::spec_changes(models);
    Controller::new(Api::<ServingPolicy>::all(client), caches::watch())
        .with_config(controller::Config::default().concurrency(ctx.settings.concurrency))
        .watches_stream(model_events, |m: HybridModel| {
            let ns = m.namespace().unwrap_or_default();
            std::iter::once(ObjectRef::new(&m.spec.serving_policy_ref.name).within(&ns))
        })
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
        .run(
            move |policy, ctx| reconcile(policy, ctx, models.clone(), readiness.clone()),
            error_policy(KIND),
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// Cross-field rules, repeated here for objects admitted before the CEL rules existed.
pub fn validate(spec: &ServingPolicySpec) -> Result<()> {
    let mut problems = Vec::new();
    if spec.replicas.min > spec.replicas.max {
        problems.push(format!(
            "replicas.min ({}) is greater than replicas.max ({})",
            spec.replicas.min, spec.replicas.max
        ));
    }
    if spec.retrieval.min_top_k > spec.retrieval.top_k {
        problems.push(format!(
            "retrieval.minTopK ({}) is greater than retrieval.topK ({})",
            spec.retrieval.min_top_k, spec.retrieval.top_k
        ));
    }
    if spec.autoscaling.enabled && spec.prometheus.is_none() {
        problems.push("autoscaling.enabled needs prometheus.url".to_owned());
    }
    if let Some(ttft) = spec.latency.time_to_first_token_ms
        && ttft > spec.latency.p95_ms
    {
        problems.push(format!(
            "latency.timeToFirstTokenMs ({ttft}) exceeds latency.p95Ms ({})",
            spec.latency.p95_ms
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidSpec(problems.join("; ")))
    }
}

async fn reconcile(
    policy: Arc<ServingPolicy>,
    ctx: Arc<Context>,
    models: Store<HybridModel>,
    readiness: Readiness,
) -> Result<Action> {
    readiness.wait().await;
    let _timer = ctx.metrics.reconcile_timer(KIND);
    let ns = namespace_of(&*policy)?;
    let api: Api<ServingPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let mut used_by: Vec<String> = models
        .state()
        .iter()
        .filter(|m| {
            m.namespace().as_deref() == Some(ns.as_str())
                && m.spec.serving_policy_ref.name == policy.name_any()
        })
        .map(|m| m.name_any())
        .collect();
    used_by.sort();

    let health = match validate(&policy.spec) {
        Ok(()) => Health::ready(reasons::SUCCEEDED, "policy is valid"),
        Err(e) => Health::stalled(e.label(), e.to_string()),
    };
    let mut status = policy.status.clone().unwrap_or_default();
    status.observed_generation = policy.metadata.generation;
    status.used_by = used_by;
    set_health(
        &mut status.conditions,
        &health,
        policy.metadata.generation,
        &crate::status::now(),
    );
    if let (Some(ns), Some(name)) = (
        policy.metadata.namespace.as_deref(),
        policy.metadata.name.as_deref(),
    ) {
        ctx.metrics.record_status(
            KIND,
            ns,
            name,
            &status.conditions,
            None,
            &crate::status::now(),
        );
    }
    if apply_status(&api, &*policy, policy.status.as_ref(), &status).await?
        && let Health::Stalled { reason, message } = &health
    {
        ctx.event(&*policy, true, reason, "Validate", message.clone())
            .await;
    }
    Ok(Action::requeue(RESYNC))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures::policy;

    #[test]
    fn cross_field_problems_are_all_reported() {
        let p = policy(
            r#"
apiVersion: hybrid.dev/v1alpha1
kind: ServingPolicy
metadata: {name: p, namespace: demo}
spec:
  latency: {p95Ms: 100, timeToFirstTokenMs: 200}
  replicas: {min: 3, max: 2}
  retrieval: {topK: 2, minTopK: 4}
  autoscaling: {enabled: true}
"#,
        );
        let err = validate(&p.spec).expect_err("invalid");
        assert_eq!(err.label(), "InvalidSpec");
        let msg = err.to_string();
        for needle in [
            "replicas.min",
            "minTopK",
            "prometheus.url",
            "timeToFirstTokenMs",
        ] {
            assert!(msg.contains(needle), "{msg} lacks {needle}");
        }
        let ok = policy(
            r#"
apiVersion: hybrid.dev/v1alpha1
kind: ServingPolicy
metadata: {name: p, namespace: demo}
spec:
  latency: {p95Ms: 100}
"#,
        );
        assert!(validate(&ok.spec).is_ok());
    }
}
