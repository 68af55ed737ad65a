//! Kinds as the operator's caches hold them when it reads a few fields of many objects: a watch
//! of one of these deserializes only those fields (serde skips the rest of the JSON), so a cached
//! object costs its metadata and a few strings. k8s-openapi's structs hold every optional field
//! inline: a `Pod` is 2,440 bytes before a single field is set, and a Job's pod carries its spec,
//! image names and conditions besides.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::JobStatus;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStateWaiting, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// A pod of one of the operator's Jobs, read for how its containers ended (the result or
/// failure a Job reports through its termination message) and for what keeps it from running
/// (`stuck::diagnose`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct JobPod {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodState>,
}

/// The part of a pod's status the operator reads: its conditions (`Ready`, `PodScheduled`) and
/// its containers' states.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PodCondition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerEnd>,
}

/// A container's name and image, what it waits for, and, once it has ended, how (`state`, or
/// `lastState` after a restart).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEnd {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Ended>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state: Option<Ended>,
}

/// The `waiting` and `terminated` members of a container state (`running` is not read).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Ended {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<ContainerStateWaiting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<ContainerStateTerminated>,
}

impl JobPod {
    /// How `container` ended: its current state, else its last (it was restarted since).
    pub fn terminated(&self, container: &str) -> Option<&ContainerStateTerminated> {
        let c = (self.status.as_ref()?.container_statuses.iter()).find(|c| c.name == container)?;
        fn ended(s: &Option<Ended>) -> Option<&ContainerStateTerminated> {
            s.as_ref()?.terminated.as_ref()
        }
        ended(&c.state).or_else(|| ended(&c.last_state))
    }
}

/// A serving pod, read for its readiness, the revisions it reports it has loaded (an
/// annotation, `build::loaded`), and what keeps it from running (`stuck::diagnose`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ServingPod {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodState>,
}

impl ServingPod {
    /// Ready, and not being deleted.
    pub fn is_ready(&self) -> bool {
        self.metadata.deletion_timestamp.is_none()
            && self.status.as_ref().is_some_and(|s| {
                (s.conditions.iter()).any(|c| c.type_ == "Ready" && c.status == "True")
            })
    }
}

impl PodState {
    /// Drops the conditions no reconciler reads: all but `Ready` and a failing `PodScheduled`.
    pub fn trim_conditions(&mut self) {
        self.conditions
            .retain(|c| c.type_ == "Ready" || (c.type_ == "PodScheduled" && c.status == "False"));
    }

    /// Cuts termination messages to [`CACHED_MESSAGE_CHARS`]: for serving pods, whose
    /// messages are crash reports read for a condition message, never results.
    pub fn trim_messages(&mut self) {
        for c in &mut self.container_statuses {
            for ended in [c.state.as_mut(), c.last_state.as_mut()]
                .into_iter()
                .flatten()
            {
                if let Some(message) = ended.terminated.as_mut().and_then(|t| t.message.as_mut())
                    && message.len() > CACHED_MESSAGE_CHARS
                {
                    *message = message.chars().take(CACHED_MESSAGE_CHARS).collect();
                }
            }
        }
    }
}

/// Longest termination message a cached serving pod keeps: enough for the runtime's error
/// line, while a log tail (`FallbackToLogsOnError`, up to 4 KiB) is not held for every pod.
pub const CACHED_MESSAGE_CHARS: usize = 512;

/// A Job as the caches hold it: metadata (owner, labels, creation time) and status. Its spec is
/// what the operator created it with.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct JobState {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
}

/// `Resource` for a slim type of a namespaced built-in kind: the kind's own API path.
macro_rules! slim_resource {
    ($slim:ty, $kind:literal, $group:literal, $version:literal, $plural:literal) => {
        impl Resource for $slim {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                $group.into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                $version.into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

slim_resource!(JobPod, "Pod", "", "v1", "pods");
slim_resource!(ServingPod, "Pod", "", "v1", "pods");
slim_resource!(JobState, "Job", "batch", "v1", "jobs");

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Pod;

    /// A Job pod as the apiserver returns it: spec, conditions and container details included.
    fn pod_json() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "c-index-abc-x7", "namespace": "team",
                "labels": {"batch.kubernetes.io/job-name": "c-index-abc"},
                "annotations": {"hybrid.dev/kwok-termination-message": "{}"}},
            "spec": {"containers": [{"name": "index", "image": "hybrid-runtime:1",
                "args": ["index", "--config", "/etc/hybrid/corpus.yaml"]}]},
            "status": {"phase": "Failed",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {"name": "sidecar", "image": "x", "imageID": "", "ready": false,
                     "restartCount": 0, "state": {"running": {}}},
                    {"name": "index", "image": "hybrid-runtime:1", "imageID": "sha256:1",
                     "ready": false, "restartCount": 1,
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                     "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                        "message": "{\"kind\":\"IndexError\"}"}}}]}
        })
    }

    #[test]
    fn a_job_pod_keeps_what_tells_how_its_containers_ended() {
        let pod: JobPod = serde_json::from_value(pod_json()).expect("deserializes");
        assert_eq!(pod.metadata.name.as_deref(), Some("c-index-abc-x7"));
        assert_eq!(pod.meta().labels.as_ref().map(|l| l.len()), Some(1));
        let end = pod
            .terminated("index")
            .expect("the last state, after a restart");
        assert_eq!(
            (end.exit_code, end.reason.as_deref()),
            (137, Some("OOMKilled"))
        );
        assert_eq!(end.message.as_deref(), Some("{\"kind\":\"IndexError\"}"));
        assert!(pod.terminated("sidecar").is_none(), "still running");
        assert!(pod.terminated("absent").is_none());
    }

    #[test]
    fn trimmed_pod_states_keep_what_tells_why_a_pod_is_stuck() {
        let mut pod: ServingPod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "advisor-1"},
            "status": {"conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "serve", "image": "runtime:1",
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "x".repeat(4096)}}}]}
        }))
        .expect("pod");
        let state = pod.status.as_mut().expect("status");
        state.trim_conditions();
        state.trim_messages();
        let types: Vec<&str> = state.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            ["Ready"],
            "a scheduled pod's PodScheduled is not kept"
        );
        let c = &state.container_statuses[0];
        assert_eq!(c.image, "runtime:1");
        let waiting = c
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .expect("w");
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
        let last = c
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("t");
        assert_eq!(
            last.message.as_deref().map(str::len),
            Some(CACHED_MESSAGE_CHARS)
        );
    }

    #[test]
    fn slim_kinds_are_a_fraction_of_the_typed_ones_at_the_same_url() {
        assert!(
            std::mem::size_of::<JobPod>() * 3 < std::mem::size_of::<Pod>(),
            "JobPod {} bytes, Pod {}",
            std::mem::size_of::<JobPod>(),
            std::mem::size_of::<Pod>()
        );
        assert_eq!(
            <JobPod as Resource>::url_path(&(), Some("team")),
            <Pod as Resource>::url_path(&(), Some("team"))
        );
        assert!(std::mem::size_of::<ServingPod>() * 3 < std::mem::size_of::<Pod>());
        assert_eq!(
            <ServingPod as Resource>::url_path(&(), None),
            <Pod as Resource>::url_path(&(), None)
        );
        assert!(std::mem::size_of::<JobState>() * 2 < std::mem::size_of::<Job>());
        assert_eq!(
            <JobState as Resource>::url_path(&(), Some("team")),
            <Job as Resource>::url_path(&(), Some("team"))
        );
    }
}
