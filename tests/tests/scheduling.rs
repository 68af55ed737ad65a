//! Scheduling onto KWOK GPU nodes: the real kube-scheduler places `nvidia.com/gpu` requests
//! by node allocatable and the GPU taint.

use std::time::Duration;

use hybrid_e2e::{Check, TestNamespace, client, poll};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};

const TIMEOUT: Duration = Duration::from_secs(90);

const GPU_DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: gpu-app}
spec:
  replicas: 2
  selector: {matchLabels: {app: gpu-app}}
  template:
    metadata: {labels: {app: gpu-app}}
    spec:
      tolerations:
      - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
      containers:
      - name: main
        image: registry.invalid/hybrid-runtime:e2e
        resources:
          limits: {nvidia.com/gpu: 1}
"#;

fn pod(name: &str, gpus: u32, tolerate_gpu_taint: bool) -> String {
    let tolerations = if tolerate_gpu_taint {
        "  tolerations:\n  - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}\n"
    } else {
        ""
    };
    let resources = if gpus > 0 {
        format!("    resources:\n      limits: {{nvidia.com/gpu: {gpus}}}\n")
    } else {
        String::new()
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{tolerations}  containers:\n  \
         - name: main\n    image: registry.invalid/hybrid-runtime:e2e\n{resources}"
    )
}

fn condition<'a>(
    pod: &'a Pod,
    type_: &str,
) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Waits until the scheduler gives up on the pod and returns its PodScheduled message.
async fn unschedulable_message(ns: &TestNamespace, name: &str) -> String {
    let pods = ns.api::<Pod>();
    poll(
        &format!("pod {name} to be Unschedulable"),
        TIMEOUT,
        || async {
            let pod = pods.get(name).await?;
            match condition(&pod, "PodScheduled") {
                Some(c) if c.status == "False" && c.reason.as_deref() == Some("Unschedulable") => {
                    Ok(Check::Done(c.message.clone().unwrap_or_default()))
                }
                // Once bound it never becomes Unschedulable: fail now, not at the timeout.
                Some(c) if c.status == "True" => Err(anyhow::anyhow!(
                    "pod {name} was scheduled onto {:?}",
                    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
                )),
                other => Ok(Check::Waiting(format!("PodScheduled: {other:?}"))),
            }
        },
    )
    .await
    .expect("pod becomes Unschedulable")
}

#[tokio::test]
async fn gpu_deployment_lands_on_gpu_nodes_and_becomes_ready() {
    let client = client().await.expect("cluster client");
    let ns = TestNamespace::create(&client, "gpu-deploy")
        .await
        .expect("namespace");
    ns.apply_yaml(GPU_DEPLOYMENT)
        .await
        .expect("apply Deployment");
    ns.wait_for_condition("Deployment", "gpu-app", "Available", TIMEOUT)
        .await
        .expect("Deployment Available");

    let pods = ns.api::<Pod>();
    let ready = poll("2 Ready gpu-app pods", TIMEOUT, || async {
        let list = pods
            .list(&ListParams::default().labels("app=gpu-app"))
            .await?;
        let ready: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| condition(p, "Ready").is_some_and(|c| c.status == "True"))
            .collect();
        Ok(if ready.len() == 2 {
            Check::Done(ready)
        } else {
            Check::Waiting(format!("{} Ready", ready.len()))
        })
    })
    .await
    .expect("pods Ready");

    let nodes = Api::<Node>::all(client.clone());
    for pod in ready {
        let node_name = pod
            .spec
            .and_then(|s| s.node_name)
            .expect("Ready pod is bound");
        let node = nodes.get(&node_name).await.expect("node exists");
        let labels = node.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get("nvidia.com/gpu.present").map(String::as_str),
            Some("true"),
            "GPU pod landed on {node_name}, which is not a GPU node"
        );
        let allocatable = node.status.and_then(|s| s.allocatable).unwrap_or_default();
        assert!(
            allocatable.contains_key("nvidia.com/gpu"),
            "{node_name} has no GPUs allocatable"
        );
    }
}

#[tokio::test]
async fn pod_asking_for_more_gpus_than_any_node_has_stays_pending() {
    let client = client().await.expect("cluster client");
    let ns = TestNamespace::create(&client, "gpu-nine")
        .await
        .expect("namespace");
    ns.apply_yaml(&pod("nine-gpus", 9, true))
        .await
        .expect("apply Pod");
    let message = unschedulable_message(&ns, "nine-gpus").await;
    assert!(
        message.contains("Insufficient nvidia.com/gpu"),
        "unexpected scheduler message: {message}"
    );
    let pod = ns.api::<Pod>().get("nine-gpus").await.expect("pod");
    assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    assert_eq!(pod.spec.and_then(|s| s.node_name), None);
}

#[tokio::test]
async fn gpu_pod_without_the_toleration_is_kept_off_gpu_nodes() {
    let client = client().await.expect("cluster client");
    let ns = TestNamespace::create(&client, "gpu-taint")
        .await
        .expect("namespace");
    ns.apply_yaml(&pod("no-toleration", 1, false))
        .await
        .expect("apply Pod");
    let message = unschedulable_message(&ns, "no-toleration").await;
    assert!(
        message.contains("untolerated taint") && message.contains("nvidia.com/gpu"),
        "unexpected scheduler message: {message}"
    );
}

#[tokio::test]
async fn plain_pod_runs_on_a_cpu_node() {
    let client = client().await.expect("cluster client");
    let ns = TestNamespace::create(&client, "cpu-pod")
        .await
        .expect("namespace");
    ns.apply_yaml(&pod("plain", 0, false))
        .await
        .expect("apply Pod");
    let pod = ns
        .wait_for_condition("Pod", "plain", "Ready", TIMEOUT)
        .await
        .expect("pod Ready");
    let node = pod.data["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let node = Api::<Node>::all(client)
        .get(&node)
        .await
        .expect("node exists");
    let labels = node.metadata.labels.unwrap_or_default();
    assert!(
        !labels.contains_key("nvidia.com/gpu.present"),
        "a pod without the toleration landed on GPU node {:?}",
        node.metadata.name
    );
}
