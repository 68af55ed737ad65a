//! The latency autoscaler: holds each HybridModel's p95 within its ServingPolicy's SLO by
//! changing retrieval depth (top-k) and replicas.
//!
//! A loop separate from the controllers, on a short tick: for every HybridModel whose
//! ServingPolicy enables autoscaling it reads the runtime pods' latency from Prometheus
//! ([`prometheus`]), decides ([`decide`]), and writes the decision to `status.autoscaler` with
//! its own field manager. The HybridModel controller renders the Deployment's replicas and the
//! runtime config's top-k from that status, so a decision reaches pods the same way every other
//! change does (top-k through the config reload, in seconds; replicas through the Deployment).
//! The status is written only when the decision or its reason changes, so a steady model costs
//! no apiserver writes.

pub mod decide;
pub mod prometheus;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hybrid_crds::model::AutoscalerStatus;
use hybrid_crds::{HybridModel, ServingPolicy};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use prometheus_client::{GaugeVec, IntCounterVec, Opts, Registry};

use crate::cluster::caches::{Feed, Readiness};
use crate::context::Context;
use decide::{Decision, Direction, Observation, Policy, Rule, State};

use ::prometheus as prometheus_client;

/// Field manager of `status.autoscaler` (the controllers own the rest of the status).
pub const FIELD_MANAGER: &str = "hybrid-operator-autoscaler";

/// How often the autoscaler reads Prometheus and decides.
pub const DEFAULT_TICK: Duration = Duration::from_secs(2);

/// Rate window of the queries. Prometheus needs at least two samples in it, so it must cover
/// a few scrape intervals: 30 s suits a 5-10 s scrape interval; with the common 15-30 s, raise
/// it to 1-2 minutes (`--autoscaler-window`). A shorter window reacts faster and is noisier;
/// the decision's band and windows absorb the noise.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub tick: Duration,
    pub window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            tick: DEFAULT_TICK,
            window: DEFAULT_WINDOW,
        }
    }
}

/// The autoscaler's metrics, registered next to the controllers' (docs/metrics.md).
#[derive(Clone)]
pub struct Metrics {
    decisions: IntCounterVec,
    observed_p95: GaugeVec,
    slo: GaugeVec,
    desired_replicas: GaugeVec,
    max_replicas: GaugeVec,
    top_k: GaugeVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus_client::Error> {
        let per_model =
            |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &["namespace", "model"]);
        let m = Self {
            decisions: IntCounterVec::new(
                Opts::new(
                    "hybrid_operator_autoscaler_decisions_total",
                    "Autoscaler decisions that changed replicas or top-k, by replica direction and reason",
                ),
                &["direction", "reason"],
            )?,
            observed_p95: per_model(
                "hybrid_operator_autoscaler_observed_p95_seconds",
                "Last p95 end-to-end latency the autoscaler read from Prometheus",
            )?,
            slo: per_model(
                "hybrid_operator_latency_slo_seconds",
                "p95 latency target of the HybridModel's ServingPolicy",
            )?,
            desired_replicas: per_model(
                "hybrid_operator_autoscaler_desired_replicas",
                "Replicas the autoscaler decided",
            )?,
            max_replicas: per_model(
                "hybrid_operator_autoscaler_max_replicas",
                "The ServingPolicy's maximum replicas",
            )?,
            top_k: per_model(
                "hybrid_operator_autoscaler_top_k",
                "Retrieval depth the autoscaler decided",
            )?,
        };
        registry.register(Box::new(m.decisions.clone()))?;
        registry.register(Box::new(m.observed_p95.clone()))?;
        registry.register(Box::new(m.slo.clone()))?;
        registry.register(Box::new(m.desired_replicas.clone()))?;
        registry.register(Box::new(m.max_replicas.clone()))?;
        registry.register(Box::new(m.top_k.clone()))?;
        Ok(m)
    }

    fn forget(&self, namespace: &str, model: &str) {
        for g in [
            &self.observed_p95,
            &self.slo,
            &self.desired_replicas,
            &self.max_replicas,
            &self.top_k,
        ] {
            let _ = g.remove_label_values(&[namespace, model]);
        }
    }
}

/// The decision inputs a ServingPolicy gives, or `None` when it does not autoscale.
pub fn policy_of(policy: &ServingPolicy) -> Option<(Policy, String)> {
    let spec = &policy.spec;
    if !spec.autoscaling.enabled {
        return None;
    }
    let url = spec.prometheus.as_ref()?.url.clone();
    let ms = |v: i32| Duration::from_millis(u64::try_from(v.max(1)).unwrap_or(1));
    let secs = |v: i32| Duration::from_secs(u64::try_from(v.max(0)).unwrap_or(0));
    let p = Policy {
        target_p95: ms(spec.latency.p95_ms),
        target_ttft_p95: spec.latency.time_to_first_token_ms.map(ms),
        min_replicas: spec.replicas.min,
        max_replicas: spec.replicas.max.max(spec.replicas.min),
        top_k: spec.retrieval.top_k,
        min_top_k: spec.retrieval.min_top_k.min(spec.retrieval.top_k),
        up: Rule {
            stabilization: secs(spec.scale_up.stabilization_seconds),
            max_step: spec.scale_up.max_step.max(1),
        },
        down: Rule {
            stabilization: secs(spec.scale_down.stabilization_seconds),
            max_step: spec.scale_down.max_step.max(1),
        },
    };
    Some((p, url))
}

/// The status the decision maps to. Observed latencies are rounded to whole milliseconds so
/// noise alone does not count as a change.
pub fn status_of(decision: &Decision, obs: &Observation, policy: &Policy) -> AutoscalerStatus {
    let ms = |s: f64| (s.is_finite()).then(|| (s * 1000.0).round());
    let (p95, ttft) = match obs {
        Observation::Measured { p95, ttft_p95, .. } => (ms(*p95), ttft_p95.and_then(ms)),
        _ => (None, None),
    };
    AutoscalerStatus {
        observed_p95_ms: p95,
        observed_ttft_p95_ms: ttft,
        target_p95_ms: i32::try_from(policy.target_p95.as_millis()).ok(),
        desired_replicas: Some(decision.replicas),
        top_k: Some(decision.top_k),
        reason: Some(format!(
            "{}: {}",
            decision.reason.as_str(),
            decision.message
        )),
        last_decision_time: None,
    }
}

/// The HybridModel's `Autoscaling` condition (status, reason, message) from the autoscaler's
/// last written decision.
pub fn condition_of(status: Option<&AutoscalerStatus>) -> (bool, &'static str, String) {
    use hybrid_crds::conditions::reasons;
    let Some(reason) = status.and_then(|s| s.reason.as_deref()) else {
        return (
            false,
            reasons::METRICS_UNAVAILABLE,
            "waiting for the autoscaler's first reading from Prometheus".to_owned(),
        );
    };
    let label = reason_label(reason);
    let held = [
        decide::Reason::PrometheusUnavailable,
        decide::Reason::NoData,
    ];
    let breached = [
        decide::Reason::LatencyAboveTarget,
        decide::Reason::QueueBuildingUp,
    ];
    if held.iter().any(|r| r.as_str() == label) {
        (false, reasons::METRICS_UNAVAILABLE, reason.to_owned())
    } else if breached.iter().any(|r| r.as_str() == label) {
        (true, reasons::SLO_BREACHED, reason.to_owned())
    } else {
        (true, reasons::WITHIN_SLO, reason.to_owned())
    }
}

/// What the autoscaler reads: the controllers' caches of HybridModels and ServingPolicies (a
/// tick lists nothing from the apiserver).
pub struct Caches {
    pub models: Store<HybridModel>,
    pub policies: Store<ServingPolicy>,
    pub ready: [Readiness; 2],
}

impl Caches {
    /// The caches of two feeds. The autoscaler reads them on its ticks and needs no events:
    /// the streams are dropped at once, so nothing queues up for it.
    pub fn from_feeds(models: Feed<HybridModel>, policies: Feed<ServingPolicy>) -> Self {
        let Feed {
            store: models,
            events,
            ready: models_ready,
        } = models;
        drop(events);
        let Feed {
            store: policies,
            events,
            ready: policies_ready,
        } = policies;
        drop(events);
        Self {
            models,
            policies,
            ready: [models_ready, policies_ready],
        }
    }
}

/// Runs until the process stops. Errors of one tick are logged; the next tick tries again.
pub async fn run(ctx: Arc<Context>, settings: Settings, metrics: Metrics, caches: Caches) {
    for ready in &caches.ready {
        ready.wait().await;
    }
    let prom = match prometheus::Client::new() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "autoscaler disabled: cannot build its HTTP client");
            return;
        }
    };
    let mut states: HashMap<(String, String), State> = HashMap::new();
    let mut interval = tokio::time::interval(settings.tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(e) = tick(&ctx, &caches, &prom, &settings, &metrics, &mut states).await {
            tracing::warn!(error = %e, "autoscaler tick failed");
        }
    }
}

async fn tick(
    ctx: &Context,
    caches: &Caches,
    prom: &prometheus::Client,
    settings: &Settings,
    metrics: &Metrics,
    states: &mut HashMap<(String, String), State>,
) -> Result<(), kube::Error> {
    let policies: HashMap<(String, String), Arc<ServingPolicy>> = caches
        .policies
        .state()
        .into_iter()
        .map(|p| ((p.namespace().unwrap_or_default(), p.name_any()), p))
        .collect();
    if !policies.values().any(|p| policy_of(p).is_some()) {
        // Nothing autoscaled: forget what was.
        for (ns, name) in states.keys() {
            metrics.forget(ns, name);
        }
        states.clear();
        return Ok(());
    }
    // One Prometheus that cannot be queried is not asked again for each of its models this tick.
    let mut unavailable: HashMap<String, Observation> = HashMap::new();
    let mut seen = HashSet::new();
    for model in caches.models.state() {
        let ns = model.namespace().unwrap_or_default();
        let name = model.name_any();
        let Some((policy, url)) = policies
            .get(&(ns.clone(), model.spec.serving_policy_ref.name.clone()))
            .and_then(|p| policy_of(p))
        else {
            continue;
        };
        let key = (ns.clone(), name.clone());
        seen.insert(key.clone());
        let current = model.status.as_ref().and_then(|s| s.autoscaler.clone());
        let now = Instant::now();
        let state = states.entry(key).or_insert_with(|| {
            // Resume from the last decision (or the policy's floor) after a restart.
            State::new(
                current
                    .as_ref()
                    .and_then(|a| a.desired_replicas)
                    .unwrap_or(policy.min_replicas),
                current
                    .as_ref()
                    .and_then(|a| a.top_k)
                    .unwrap_or(policy.top_k),
                now,
            )
        });
        let before = (state.replicas, state.top_k);
        let obs = match unavailable.get(&url) {
            Some(down) => down.clone(),
            None => {
                let obs = prom
                    .observe(&url, &prometheus::Queries::new(&ns, &name, settings.window))
                    .await;
                if matches!(obs, Observation::Unavailable(_)) {
                    unavailable.insert(url.clone(), obs.clone());
                }
                obs
            }
        };
        let decision = decide::decide(&policy, &obs, state, now);

        let secs = |d: Duration| d.as_secs_f64();
        metrics
            .slo
            .with_label_values(&[&ns, &name])
            .set(secs(policy.target_p95));
        metrics
            .max_replicas
            .with_label_values(&[&ns, &name])
            .set(f64::from(policy.max_replicas));
        metrics
            .desired_replicas
            .with_label_values(&[&ns, &name])
            .set(f64::from(decision.replicas));
        metrics
            .top_k
            .with_label_values(&[&ns, &name])
            .set(f64::from(decision.top_k));
        if let Observation::Measured { p95, .. } = &obs {
            metrics
                .observed_p95
                .with_label_values(&[&ns, &name])
                .set(*p95);
        }

        let changed = decision.changes(before.0, before.1);
        let mut desired = status_of(&decision, &obs, &policy);
        let same_reason = current.as_ref().is_some_and(|c| {
            c.reason.as_deref().map(reason_label) == Some(decision.reason.as_str())
                && c.desired_replicas == desired.desired_replicas
                && c.top_k == desired.top_k
        });
        if same_reason && !changed {
            continue;
        }
        desired.last_decision_time = Some(crate::status::now());
        write_status(ctx, &model, &desired).await?;
        if changed {
            metrics
                .decisions
                .with_label_values(&[decision.direction.as_str(), decision.reason.as_str()])
                .inc();
        }
        let note = format!(
            "replicas {} → {}, top-k {} → {} ({}: {})",
            before.0,
            decision.replicas,
            before.1,
            decision.top_k,
            decision.reason.as_str(),
            decision.message
        );
        tracing::info!(namespace = %ns, model = %name, direction = decision.direction.as_str(), "{note}");
        let event_type = match decision.reason {
            decide::Reason::PrometheusUnavailable | decide::Reason::NoData => EventType::Warning,
            _ => EventType::Normal,
        };
        let action = match decision.direction {
            Direction::Up => "ScaleUp",
            Direction::Down => "ScaleDown",
            Direction::Hold => "Hold",
        };
        if let Err(e) = ctx
            .events
            .publish(
                &Event {
                    type_: event_type,
                    reason: format!("Autoscaler{}", decision.reason.as_str()),
                    note: Some(note),
                    action: action.into(),
                    secondary: None,
                },
                &model.object_ref(&()),
            )
            .await
        {
            tracing::warn!(error = %e, "publishing the autoscaler event failed");
        }
    }
    // Models deleted or no longer autoscaled: drop their state and their gauge series.
    states.retain(|(ns, name), _| {
        let keep = seen.contains(&(ns.clone(), name.clone()));
        if !keep {
            metrics.forget(ns, name);
        }
        keep
    });
    Ok(())
}

/// The machine-readable reason at the front of `status.autoscaler.reason`.
fn reason_label(reason: &str) -> &str {
    reason.split(':').next().unwrap_or(reason)
}

async fn write_status(
    ctx: &Context,
    model: &HybridModel,
    desired: &AutoscalerStatus,
) -> Result<(), kube::Error> {
    let api: Api<HybridModel> =
        Api::namespaced(ctx.client.clone(), &model.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": HybridModel::api_version(&()),
        "kind": HybridModel::kind(&()),
        "status": { "autoscaler": desired },
    });
    api.patch_status(
        &model.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
apiVersion: hybrid.dev/v1alpha1
kind: ServingPolicy
metadata: {name: p, namespace: ml}
spec:
  latency: {p95Ms: 800, timeToFirstTokenMs: 300}
  replicas: {min: 2, max: 6}
  retrieval: {topK: 10, minTopK: 4}
  prometheus: {url: "http://prom:9090"}
  autoscaling: {enabled: true}
"#;

    #[test]
    fn a_policy_maps_to_decision_bounds() {
        let p: ServingPolicy = serde_yaml::from_str(POLICY).expect("policy");
        let (d, url) = policy_of(&p).expect("autoscaled");
        assert_eq!(url, "http://prom:9090");
        assert_eq!(d.target_p95, Duration::from_millis(800));
        assert_eq!(d.target_ttft_p95, Some(Duration::from_millis(300)));
        assert_eq!(
            (d.min_replicas, d.max_replicas, d.top_k, d.min_top_k),
            (2, 6, 10, 4)
        );
        assert_eq!(
            d.up.stabilization,
            Duration::from_secs(15),
            "policy default"
        );
        assert_eq!(d.down.max_step, 1);
        let mut off = p.clone();
        off.spec.autoscaling.enabled = false;
        assert!(policy_of(&off).is_none());
    }

    #[test]
    fn status_rounds_latency_and_names_the_reason() {
        let p: ServingPolicy = serde_yaml::from_str(POLICY).expect("policy");
        let (policy, _) = policy_of(&p).expect("autoscaled");
        let t = Instant::now();
        let mut s = State::new(2, 10, t);
        let obs = Observation::Measured {
            p95: 1.6,
            ttft_p95: Some(0.20049),
            rate: 4.0,
            queue: 0.0,
        };
        let d = decide::decide(&policy, &obs, &mut s, t);
        let st = status_of(&d, &obs, &policy);
        assert_eq!(st.observed_p95_ms, Some(1600.0));
        // Rounded to whole milliseconds, so noise below 1 ms is not a change worth a write.
        assert_eq!(st.observed_ttft_p95_ms, Some(200.0));
        assert_eq!(st.target_p95_ms, Some(800));
        assert_eq!(st.top_k, Some(5), "10 passages at twice the target");
        assert_eq!(condition_of(Some(&st)).1, "SLOBreached");
        let reason = st.reason.expect("reason");
        assert_eq!(reason_label(&reason), "LatencyAboveTarget", "{reason}");
    }

    #[test]
    fn the_condition_says_why_replicas_are_held() {
        assert_eq!(condition_of(None).1, "MetricsUnavailable");
        let held = AutoscalerStatus {
            reason: Some(
                "PrometheusUnavailable: holding 2 replicas and top-k 8: connection refused".into(),
            ),
            ..AutoscalerStatus::default()
        };
        let (ok, reason, message) = condition_of(Some(&held));
        assert!(!ok);
        assert_eq!(reason, "MetricsUnavailable");
        assert!(message.contains("connection refused"), "{message}");
        let fine = AutoscalerStatus {
            reason: Some("WithinTarget: p95 400 ms against 800 ms target".into()),
            ..AutoscalerStatus::default()
        };
        assert_eq!(
            condition_of(Some(&fine)),
            (true, "WithinSLO", fine.reason.clone().expect("set"))
        );
    }
}
