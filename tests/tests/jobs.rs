//! Jobs on KWOK nodes: the project's kwok stages (tests/cluster/kwok/stages.yaml) complete Job
//! pods, copy a result into the termination message, delay completion and fail on request.

use std::time::Duration;

use hybrid_e2e::{TestNamespace, client};
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use kube::api::ListParams;

const TIMEOUT: Duration = Duration::from_secs(90);

fn job(name: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| format!("        {k}: '{v}'\n"))
        .collect();
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
  backoffLimit: 0
  template:
    metadata:
      annotations:
{annotations}    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: registry.invalid/hybrid-runtime:e2e
        args: [train]
"#
    )
}

async fn only_pod(ns: &TestNamespace, job: &str) -> Pod {
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .expect("list pods");
    assert_eq!(
        pods.items.len(),
        1,
        "Job {job} should have run exactly one pod"
    );
    pods.items.into_iter().next().expect("one pod")
}

fn terminated(pod: &Pod) -> ContainerStateTerminated {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.clone())
        .expect("container terminated")
}

#[tokio::test]
async fn job_completes_and_its_result_is_in_the_termination_message() {
    let client = client().await.expect("cluster client");
    let ns = TestNamespace::create(&client, "job-ok")
        .await
        .expect("namespace");
    let result = r#"{"adapterRevision":"r-1a2b","loss":0.42}"#;
    ns.apply_yaml(&job(
        "train",
        &[("hybrid.dev/kwok-termination-message", result)],
    ))
    .await
    .expect("apply Job");
    ns.wait_for_condition("Job", "train", "Complete", TIMEOUT)
        .await
        .expect("Job Complete");

    let pod = only_pod(&ns, "train").await;
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded")
    );
    let terminated = terminated(&pod);
    assert_eq!(terminated.exit_code, 0);
    let message: serde_json::Value =
        serde_json::from_str(terminated.message.as_deref().expect("termination message"))
            .expect("termination message is the JSON the test put there");
    assert_eq!(message["adapterRevision"], "r-1a2b");
    assert_eq!(message["loss"], 0.42);
}

#[tokio::test]
async fn job_pod_with_the_fail_annotation_fails_the_job() {
    let client = client().await.expect("cluster client");
    let ns = TestNamespace::create(&client, "job-fail")
        .await
        .expect("namespace");
    ns.apply_yaml(&job(
        "train",
        &[
            ("hybrid.dev/kwok-fail", "OOMKilled"),
            ("hybrid.dev/kwok-exit-code", "137"),
            (
                "hybrid.dev/kwok-termination-message",
                "out of GPU memory at step 12",
            ),
        ],
    ))
    .await
    .expect("apply Job");
    let job = ns
        .wait_for_condition("Job", "train", "Failed", TIMEOUT)
        .await
        .expect("Job Failed");
    assert_ne!(
        hybrid_e2e::condition_status(&job, "Complete").as_deref(),
        Some("True"),
        "a failed Job must not also be Complete"
    );

    let pod = only_pod(&ns, "train").await;
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed")
    );
    let terminated = terminated(&pod);
    assert_eq!(terminated.exit_code, 137);
    assert_eq!(terminated.reason.as_deref(), Some("OOMKilled"));
    assert_eq!(
        terminated.message.as_deref(),
        Some("out of GPU memory at step 12")
    );
}

#[tokio::test]
async fn completion_waits_for_the_delay_annotation() {
    let client = client().await.expect("cluster client");
    let ns = TestNamespace::create(&client, "job-delay")
        .await
        .expect("namespace");
    ns.apply_yaml(&job("train", &[("hybrid.dev/kwok-complete-after", "5s")]))
        .await
        .expect("apply Job");
    ns.wait_for_condition("Job", "train", "Complete", TIMEOUT)
        .await
        .expect("Job Complete");

    // kwok counts the delay from when it sees the pod Running, which is after startTime, so
    // the pod's own timestamps must be at least the delay apart (both are whole seconds).
    let pod = only_pod(&ns, "train").await;
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .expect("startTime");
    let finished = terminated(&pod).finished_at.expect("finishedAt");
    let ran = finished.0.as_second() - started.0.as_second();
    assert!(
        ran >= 5,
        "pod finished {ran} s after it started; the annotation asked for 5 s"
    );
}
