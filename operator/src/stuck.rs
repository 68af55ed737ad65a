//! Why a pod makes no progress, in words a user can act on: the scheduler cannot place it, the
//! kubelet cannot pull its image or build its container, or its container keeps crashing. A
//! pod in one of these states stays Pending or restarts for ever; without this the owner's
//! status would say "Indexing" or "RollingOut" with no end.
//!
//! Pure: a pod as the caches hold it ([`PodState`]) in, a [`Stuck`] out. The reasons are the
//! scheduler's and kubelet's own, so a user can search for them; `ErrImagePull` is reported as
//! `ImagePullBackOff` (the kubelet alternates the two while it retries, and one situation
//! should not flip the condition back and forth).

use crate::cluster::cached_objects::{ContainerEnd, JobPod, PodState, ServingPod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// Condition and Event reasons for a stuck pod (Kubernetes' own words) and for the deadlines
/// that end one.
pub mod reasons {
    /// The scheduler finds no node for the pod (resources, selectors, taints, a missing
    /// PersistentVolumeClaim).
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    /// The kubelet cannot pull the image (`ImagePullBackOff` or `ErrImagePull`).
    pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
    /// The image is not on the node and its pull policy is `Never`.
    pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
    /// The image reference cannot be parsed.
    pub const INVALID_IMAGE_NAME: &str = "InvalidImageName";
    /// The container cannot be built from its spec: a Secret or ConfigMap (or a key in one)
    /// it reads is missing.
    pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
    /// The container runtime refused to create or start the container.
    pub const CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
    /// The container runtime could not start the container.
    pub const RUN_CONTAINER_ERROR: &str = "RunContainerError";
    /// The container keeps exiting and the kubelet backs off restarting it.
    pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
    /// The container keeps being killed for going over its memory limit.
    pub const OOM_KILLED: &str = "OOMKilled";
    /// A Job ran past its `activeDeadlineSeconds` (the Job controller's reason).
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    /// A Deployment made no progress within its `progressDeadlineSeconds` (the Deployment
    /// controller's reason).
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
}

/// Whether `reason` is one of [`reasons`]: a stuck pod's, or a deadline's.
pub fn is_stuck_reason(reason: &str) -> bool {
    use reasons::*;
    [
        UNSCHEDULABLE,
        IMAGE_PULL_BACK_OFF,
        ERR_IMAGE_NEVER_PULL,
        INVALID_IMAGE_NAME,
        CREATE_CONTAINER_CONFIG_ERROR,
        CREATE_CONTAINER_ERROR,
        RUN_CONTAINER_ERROR,
        CRASH_LOOP_BACK_OFF,
        OOM_KILLED,
        DEADLINE_EXCEEDED,
        PROGRESS_DEADLINE_EXCEEDED,
    ]
    .contains(&reason)
}

/// How long a Job pod may wait for its image or container config, or crash-loop, before its
/// Job counts as a failed attempt: the kubelet retries on its own, and five minutes covers a
/// slow registry or a Secret created just after the resource.
pub const STUCK_BOUND: Duration = Duration::from_secs(5 * 60);
/// How long a Job pod may stay unschedulable before its Job counts as a failed attempt: long
/// enough for a cluster autoscaler to add a (GPU) node.
pub const UNSCHEDULABLE_BOUND: Duration = Duration::from_secs(15 * 60);

/// A pod that makes no progress, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Stuck {
    /// One of [`reasons`].
    pub reason: &'static str,
    /// The pod's name.
    pub pod: String,
    /// What a user reads: the pod, the container or image, and the scheduler's or kubelet's
    /// message.
    pub message: String,
    /// Since when, as far as the pod tells: when it was found unschedulable, else when it was
    /// created (a Job pod restarts never, so it has waited since then).
    pub since: Option<Timestamp>,
}

impl Stuck {
    /// How long a Job pod may stay this way ([`STUCK_BOUND`], [`UNSCHEDULABLE_BOUND`]).
    pub fn bound(&self) -> Duration {
        if self.reason == reasons::UNSCHEDULABLE {
            UNSCHEDULABLE_BOUND
        } else {
            STUCK_BOUND
        }
    }

    /// It has been stuck for longer than its [`bound`](Self::bound) at `now`.
    pub fn past_bound(&self, now: Timestamp) -> bool {
        let bound = SignedDuration::from_secs(self.bound().as_secs() as i64);
        self.since
            .and_then(|since| since.checked_add(bound).ok())
            .is_some_and(|deadline| deadline <= now)
    }

    /// Time left until the bound, for the requeue (at least a second); None without a start.
    pub fn time_left(&self, now: Timestamp) -> Option<Duration> {
        let since = self.since?;
        let waited = now.duration_since(since).as_secs().max(0) as u64;
        Some(
            self.bound()
                .saturating_sub(Duration::from_secs(waited))
                .max(Duration::from_secs(1)),
        )
    }
}

/// Why the pod with `metadata` and `state` is stuck, or None when it runs, finished, is on its
/// way (`ContainerCreating`), or is being deleted.
pub fn diagnose(metadata: &ObjectMeta, state: Option<&PodState>) -> Option<Stuck> {
    if metadata.deletion_timestamp.is_some() {
        return None;
    }
    let state = state?;
    let pod = metadata.name.clone().unwrap_or_default();
    let created = metadata.creation_timestamp.as_ref().map(|t| t.0);
    if let Some(c) = (state.conditions.iter()).find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some(reasons::UNSCHEDULABLE)
    }) {
        let detail = c.message.as_deref().unwrap_or("no node fits it");
        return Some(Stuck {
            reason: reasons::UNSCHEDULABLE,
            message: format!("pod {pod} cannot be scheduled: {detail}"),
            pod,
            since: c.last_transition_time.as_ref().map(|t| t.0).or(created),
        });
    }
    let (reason, message) = state
        .container_statuses
        .iter()
        .find_map(|c| container_stuck(&pod, c))?;
    Some(Stuck {
        reason,
        message,
        pod,
        since: created,
    })
}

/// The reason and message of a container waiting in a state it does not leave on its own.
fn container_stuck(pod: &str, c: &ContainerEnd) -> Option<(&'static str, String)> {
    let waiting = c.state.as_ref()?.waiting.as_ref()?;
    let kubelet = waiting.message.as_deref().unwrap_or_default().trim();
    let said = |what: String| {
        if kubelet.is_empty() {
            what
        } else {
            format!("{what}: {kubelet}")
        }
    };
    let image = if c.image.is_empty() {
        "its image".to_owned()
    } else {
        format!("image {:?}", c.image)
    };
    let name = &c.name;
    Some(match waiting.reason.as_deref()? {
        "ImagePullBackOff" | "ErrImagePull" => (
            reasons::IMAGE_PULL_BACK_OFF,
            said(format!("pod {pod} cannot pull {image}")),
        ),
        "ErrImageNeverPull" => (
            reasons::ERR_IMAGE_NEVER_PULL,
            said(format!(
                "pod {pod} cannot start: {image} is not on the node and its pull policy is Never"
            )),
        ),
        "InvalidImageName" => (
            reasons::INVALID_IMAGE_NAME,
            said(format!(
                "pod {pod} cannot start: {image} is not a valid image name"
            )),
        ),
        "CreateContainerConfigError" => (
            reasons::CREATE_CONTAINER_CONFIG_ERROR,
            said(format!(
                "pod {pod} cannot create container {name} (a Secret or ConfigMap it reads is missing)"
            )),
        ),
        "CreateContainerError" => (
            reasons::CREATE_CONTAINER_ERROR,
            said(format!("pod {pod} cannot create container {name}")),
        ),
        "RunContainerError" => (
            reasons::RUN_CONTAINER_ERROR,
            said(format!("pod {pod} cannot start container {name}")),
        ),
        "CrashLoopBackOff" => {
            let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            let oom = last.is_some_and(|t| t.reason.as_deref() == Some(reasons::OOM_KILLED));
            let exit = match last {
                Some(t) => {
                    let mut exit = format!(
                        "last exit: {}, exit code {}",
                        t.reason.as_deref().unwrap_or("Error"),
                        t.exit_code
                    );
                    if let Some(m) = t.message.as_deref().map(str::trim)
                        && !m.is_empty()
                    {
                        exit.push_str(": ");
                        exit.push_str(&log_tail(m, 300));
                    }
                    exit
                }
                None => "no exit recorded".to_owned(),
            };
            let hint = if oom { " (raise its memory limit)" } else { "" };
            (
                if oom {
                    reasons::OOM_KILLED
                } else {
                    reasons::CRASH_LOOP_BACK_OFF
                },
                format!(
                    "pod {pod} container {name} keeps crashing (CrashLoopBackOff), {exit}{hint}"
                ),
            )
        }
        // ContainerCreating, PodInitializing: on its way.
        _ => return None,
    })
}

impl JobPod {
    pub fn stuck(&self) -> Option<Stuck> {
        diagnose(&self.metadata, self.status.as_ref())
    }
}

impl ServingPod {
    pub fn stuck(&self) -> Option<Stuck> {
        diagnose(&self.metadata, self.status.as_ref())
    }
}

/// The first stuck pod (by name) of a HybridModel's serving pods.
pub fn first_stuck(pods: &[&ServingPod]) -> Option<Stuck> {
    let mut stuck: Vec<Stuck> = pods.iter().filter_map(|p| p.stuck()).collect();
    stuck.sort_by(|a, b| a.pod.cmp(&b.pod));
    stuck.into_iter().next()
}

/// The end of a log as condition text: colour codes taken out, lines joined with ` | `, the
/// last `max` characters (a pod killed mid-work wrote what matters last).
pub fn log_tail(log: &str, max: usize) -> String {
    let plain = String::from_utf8_lossy(&strip_ansi_escapes::strip(log)).into_owned();
    let lines: Vec<&str> = plain
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = lines.join(" | ");
    let n = joined.chars().count();
    if n <= max {
        joined
    } else {
        format!("…{}", joined.chars().skip(n - max).collect::<String>())
    }
}

/// `5m`, `1h`, `1h30m`, `45s`: a bound as a user reads it.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_pod(json: serde_json::Value) -> JobPod {
        serde_json::from_value(json).expect("pod")
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("ts")
    }

    /// A pending pod as the apiserver returns it, with `status` merged in.
    fn pending(status: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "notes-index-c4-x7", "namespace": "team",
                "creationTimestamp": "1970-01-01T00:01:40Z",
                "labels": {"batch.kubernetes.io/job-name": "notes-index-c4"}},
            "spec": {"containers": [{"name": "index", "image": "registry.local/hybrid-runtime:nope"}]},
            "status": status,
        })
    }

    fn waiting(reason: &str, message: &str) -> serde_json::Value {
        serde_json::json!({"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"},
                           {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
            "containerStatuses": [{"name": "index", "image": "registry.local/hybrid-runtime:nope",
                "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}}}]})
    }

    #[test]
    fn unschedulable_carries_the_schedulers_message_and_its_own_start() {
        let pod = job_pod(pending(serde_json::json!({"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "lastTransitionTime": "1970-01-01T00:02:00Z",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."}]})));
        let s = pod.stuck().expect("stuck");
        assert_eq!(s.reason, "Unschedulable");
        assert_eq!(
            s.message,
            "pod notes-index-c4-x7 cannot be scheduled: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
        );
        assert_eq!(s.since, Some(at(120)));
        assert_eq!(s.bound(), UNSCHEDULABLE_BOUND);
        assert!(!s.past_bound(at(120 + 899)));
        assert!(s.past_bound(at(120 + 900)));
        assert_eq!(s.time_left(at(120 + 600)), Some(Duration::from_secs(300)));
    }

    #[test]
    fn a_missing_claim_reads_as_unschedulable_naming_the_claim() {
        let pod = job_pod(pending(serde_json::json!({"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: persistentvolumeclaim \"hybrid-artifacts\" not found. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."}]})));
        let s = pod.stuck().expect("stuck");
        assert_eq!(s.reason, "Unschedulable");
        assert!(
            s.message
                .contains("persistentvolumeclaim \"hybrid-artifacts\" not found"),
            "{}",
            s.message
        );
        // No transition time: counted from the pod's creation.
        assert_eq!(s.since, Some(at(100)));
    }

    #[test]
    fn image_pull_failures_name_the_image_and_the_kubelets_message() {
        for (kubelet_reason, message) in [
            (
                "ImagePullBackOff",
                "Back-off pulling image \"registry.local/hybrid-runtime:nope\"",
            ),
            (
                "ErrImagePull",
                "rpc error: code = NotFound desc = failed to pull and unpack image \"registry.local/hybrid-runtime:nope\": not found",
            ),
        ] {
            let s = job_pod(pending(waiting(kubelet_reason, message)))
                .stuck()
                .expect("stuck");
            assert_eq!(s.reason, "ImagePullBackOff", "{kubelet_reason}");
            assert_eq!(
                s.message,
                format!(
                    "pod notes-index-c4-x7 cannot pull image \"registry.local/hybrid-runtime:nope\": {message}"
                )
            );
            assert_eq!((s.since, s.bound()), (Some(at(100)), STUCK_BOUND));
            assert!(s.past_bound(at(400)));
        }
        let s = job_pod(pending(waiting(
            "ErrImageNeverPull",
            "Container image \"registry.local/hybrid-runtime:nope\" is not present with pull policy of Never",
        )))
        .stuck()
        .expect("stuck");
        assert_eq!(s.reason, "ErrImageNeverPull");
        assert!(s.message.contains("pull policy is Never: Container image"));
    }

    #[test]
    fn a_missing_secret_key_is_a_container_config_error_with_the_kubelets_words() {
        let s = job_pod(pending(waiting(
            "CreateContainerConfigError",
            "couldn't find key token in Secret team/hf-token",
        )))
        .stuck()
        .expect("stuck");
        assert_eq!(s.reason, "CreateContainerConfigError");
        assert_eq!(
            s.message,
            "pod notes-index-c4-x7 cannot create container index (a Secret or ConfigMap it reads is missing): couldn't find key token in Secret team/hf-token"
        );
    }

    fn crash_loop(last: serde_json::Value) -> ServingPod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "advisor-5d8f-abc", "namespace": "team",
                "creationTimestamp": "1970-01-01T00:01:40Z"},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "serve", "image": "hybrid-runtime:1",
                    "imageID": "sha256:1", "ready": false, "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff",
                        "message": "back-off 1m20s restarting failed container=serve pod=advisor-5d8f-abc_team(uid)"}},
                    "lastState": last}]}
        }))
        .expect("pod")
    }

    #[test]
    fn crash_loops_report_the_last_exit_and_an_oom_kill_as_such() {
        let s =
            crash_loop(serde_json::json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}))
                .stuck()
                .expect("stuck");
        assert_eq!(s.reason, "OOMKilled");
        assert_eq!(
            s.message,
            "pod advisor-5d8f-abc container serve keeps crashing (CrashLoopBackOff), last exit: OOMKilled, exit code 137 (raise its memory limit)"
        );
        let s = crash_loop(
            serde_json::json!({"terminated": {"exitCode": 1, "reason": "Error",
            "message": "error: model file /models/base.gguf not found\n"}}),
        )
        .stuck()
        .expect("stuck");
        assert_eq!(s.reason, "CrashLoopBackOff");
        assert_eq!(
            s.message,
            "pod advisor-5d8f-abc container serve keeps crashing (CrashLoopBackOff), last exit: Error, exit code 1: error: model file /models/base.gguf not found"
        );
    }

    #[test]
    fn pods_on_their_way_running_or_leaving_are_not_stuck() {
        assert!(
            job_pod(pending(waiting("ContainerCreating", "")))
                .stuck()
                .is_none()
        );
        assert!(
            job_pod(pending(serde_json::json!({"phase": "Pending"})))
                .stuck()
                .is_none(),
            "not looked at by the scheduler yet"
        );
        let running = job_pod(pending(serde_json::json!({"phase": "Running",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "index", "image": "x", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {"startedAt": "1970-01-01T00:02:00Z"}}}]})));
        assert!(running.stuck().is_none());
        let mut leaving = job_pod(pending(waiting("ImagePullBackOff", "Back-off")));
        leaving.metadata.deletion_timestamp = leaving.metadata.creation_timestamp.clone();
        assert!(leaving.stuck().is_none());
    }

    #[test]
    fn the_first_stuck_serving_pod_by_name_is_reported() {
        let a =
            crash_loop(serde_json::json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}));
        let mut b = a.clone();
        b.metadata.name = Some("advisor-5d8f-aaa".into());
        let ready: ServingPod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "advisor-1111-zzz"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
        .expect("pod");
        let s = first_stuck(&[&a, &ready, &b]).expect("stuck");
        assert_eq!(s.pod, "advisor-5d8f-aaa");
        assert!(first_stuck(&[&ready]).is_none());
    }

    #[test]
    fn bounds_read_as_durations() {
        assert_eq!(human(STUCK_BOUND), "5m");
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::ZERO), "0s");
    }
}
