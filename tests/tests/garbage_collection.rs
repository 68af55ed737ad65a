//! The controller-manager really runs: its garbage collector removes owned objects once
//! their owner is gone.

use std::time::Duration;

use hybrid_e2e::{Check, TestNamespace, client, poll};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams};

const TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn deleting_an_owner_deletes_what_it_owns() {
    let client = client().await.expect("cluster client");
    let ns = TestNamespace::create(&client, "gc")
        .await
        .expect("namespace");
    let owner = ns
        .apply_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owner}\n")
        .await
        .expect("apply owner")
        .remove(0);
    let uid = owner.metadata.uid.expect("owner uid");
    for name in ["owned-a", "owned-b"] {
        ns.apply_yaml(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  ownerReferences:\n  \
             - {{apiVersion: v1, kind: ConfigMap, name: owner, uid: {uid}}}\n"
        ))
        .await
        .expect("apply dependent");
    }
    // An object with no owner must survive, or the test would pass on a namespace wipe.
    ns.apply_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bystander}\n")
        .await
        .expect("apply bystander");

    let config_maps = ns.api::<ConfigMap>();
    config_maps
        .delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    poll("owned ConfigMaps to be collected", TIMEOUT, || async {
        let left: Vec<String> = config_maps
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .filter(|n| n.starts_with("owned-"))
            .collect();
        Ok(if left.is_empty() {
            Check::Done(())
        } else {
            Check::Waiting(format!("still there: {left:?}"))
        })
    })
    .await
    .expect("garbage collection");
    assert!(
        config_maps
            .get_opt("bystander")
            .await
            .expect("get")
            .is_some()
    );
}

#[tokio::test]
async fn deleting_a_deployment_collects_its_replica_sets_and_pods() {
    let client = client().await.expect("cluster client");
    let ns = TestNamespace::create(&client, "gc-deploy")
        .await
        .expect("namespace");
    ns.apply_yaml(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: main, image: registry.invalid/web:e2e}]
"#,
    )
    .await
    .expect("apply Deployment");
    ns.wait_for_condition("Deployment", "web", "Available", TIMEOUT)
        .await
        .expect("Deployment Available");
    let replica_sets = ns.api::<ReplicaSet>();
    let pods = ns.api::<Pod>();
    let by_app = ListParams::default().labels("app=web");
    assert!(
        !replica_sets
            .list(&by_app)
            .await
            .expect("list")
            .items
            .is_empty()
    );

    ns.api::<Deployment>()
        .delete("web", &DeleteParams::background())
        .await
        .expect("delete Deployment");
    poll(
        "ReplicaSets and Pods of web to be collected",
        TIMEOUT,
        || async {
            let rs = replica_sets.list(&by_app).await?.items.len();
            let p = pods.list(&by_app).await?.items.len();
            Ok(if rs == 0 && p == 0 {
                Check::Done(())
            } else {
                Check::Waiting(format!("{rs} ReplicaSets, {p} Pods"))
            })
        },
    )
    .await
    .expect("garbage collection");
}
