//! kstatus conditions and status writes.
//!
//! Every kind reports `Ready`, `Reconciling` and `Stalled` with `observedGeneration`, so Argo CD,
//! Flux and `kubectl wait --for=condition=Ready` work without custom health checks. Status is
//! written with server-side apply under one field manager, and only when it changed: a
//! reconcile that finds nothing to do writes nothing (and so triggers no watch event).

use crate::error::Result;
use hybrid_crds::conditions::types;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The one field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "hybrid-operator";

/// The kstatus summary of a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Everything the spec asks for is in place.
    Ready { reason: String, message: String },
    /// Work towards the spec is in progress; Ready is False with the same reason.
    Reconciling { reason: String, message: String },
    /// No progress is possible without a change; Ready is False with the same reason.
    Stalled { reason: String, message: String },
}

impl Health {
    pub fn ready(reason: &str, message: impl Into<String>) -> Self {
        Health::Ready {
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
    pub fn reconciling(reason: &str, message: impl Into<String>) -> Self {
        Health::Reconciling {
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
    pub fn stalled(reason: &str, message: impl Into<String>) -> Self {
        Health::Stalled {
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
    pub fn reason(&self) -> &str {
        match self {
            Health::Ready { reason, .. }
            | Health::Reconciling { reason, .. }
            | Health::Stalled { reason, .. } => reason,
        }
    }
    pub fn message(&self) -> &str {
        match self {
            Health::Ready { message, .. }
            | Health::Reconciling { message, .. }
            | Health::Stalled { message, .. } => message,
        }
    }
}

/// Sets one condition, keeping `lastTransitionTime` when the status did not flip, so a
/// reconcile that changes nothing produces an identical list.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.clone();
            }
            c.status = status;
            c.reason = reason.to_owned();
            c.message = message.to_owned();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message: message.to_owned(),
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

/// Sets Ready, Reconciling and Stalled from a [`Health`].
pub fn set_health(
    conditions: &mut Vec<Condition>,
    health: &Health,
    generation: Option<i64>,
    now: &Time,
) {
    let (ready, reconciling, stalled) = match health {
        Health::Ready { .. } => (true, false, false),
        Health::Reconciling { .. } => (false, true, false),
        Health::Stalled { .. } => (false, false, true),
    };
    let (reason, message) = (health.reason(), health.message());
    set_condition(
        conditions,
        types::READY,
        ready,
        reason,
        message,
        generation,
        now,
    );
    set_condition(
        conditions,
        types::RECONCILING,
        reconciling,
        reason,
        if reconciling { message } else { "" },
        generation,
        now,
    );
    set_condition(
        conditions,
        types::STALLED,
        stalled,
        reason,
        if stalled { message } else { "" },
        generation,
        now,
    );
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Writes `desired` as the status of `obj` with server-side apply, unless it equals the status
/// the object already has. Returns whether a write happened.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    obj: &K,
    current: Option<&S>,
    desired: &S,
) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(desired) {
        return Ok(false);
    }
    let name = obj
        .meta()
        .name
        .as_deref()
        .ok_or(crate::error::Error::MissingObjectKey("metadata.name"))?;
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": desired,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut c = Vec::new();
        set_health(
            &mut c,
            &Health::reconciling("Indexing", "job x"),
            Some(1),
            &at(10),
        );
        let first = c.clone();
        set_health(
            &mut c,
            &Health::reconciling("Indexing", "job x"),
            Some(1),
            &at(20),
        );
        assert_eq!(c, first, "an unchanged health must give an identical list");

        set_health(&mut c, &Health::ready("Succeeded", "ok"), Some(2), &at(30));
        let ready = find(&c, "Ready").expect("ready");
        assert_eq!(ready.status, "True");
        assert_eq!(ready.last_transition_time, at(30));
        assert_eq!(ready.observed_generation, Some(2));
        let stalled = find(&c, "Stalled").expect("stalled");
        assert_eq!(stalled.status, "False");
        assert_eq!(
            stalled.last_transition_time,
            at(10),
            "Stalled stayed False since the first write"
        );
        assert_eq!(
            find(&c, "Reconciling").expect("r").last_transition_time,
            at(30)
        );
    }

    #[test]
    fn stalled_sets_ready_false_with_the_reason() {
        let mut c = Vec::new();
        set_health(
            &mut c,
            &Health::stalled("BaseModelMismatch", "adapter a is for x"),
            Some(3),
            &at(1),
        );
        assert!(is_true(&c, "Stalled"));
        assert!(!is_true(&c, "Ready"));
        assert!(!is_true(&c, "Reconciling"));
        let ready = find(&c, "Ready").expect("ready");
        assert_eq!(ready.reason, "BaseModelMismatch");
        assert_eq!(ready.message, "adapter a is for x");
    }
}
