//! The chart's ValidatingAdmissionPolicy for the serving pods' ServiceAccount
//! (`templates/runtime-self-patch-policy.yaml`) against the real API server.
//!
//! The operator's per-namespace Role `hybrid-runtime` lets the ServiceAccount patch every pod of
//! the namespace; the policy narrows that to "its own Pod, only `hybrid.dev/loaded-revisions`".
//! The test applies the ServiceAccount, Role and RoleBinding the operator makes
//! (`runtime_rbac`), two pods A and B running as that ServiceAccount, and a token bound to pod A
//! (TokenRequest with `boundObjectRef`), then checks:
//!
//! - before the policy: RBAC alone lets A's token patch pod B (the hole the policy closes);
//! - with the policy: A's token patches A's `hybrid.dev/loaded-revisions`; it is denied on B, on
//!   A's labels, on another annotation of A and on A's spec; a token of the same ServiceAccount
//!   not bound to a pod is denied on A; the admin still patches B (other users unaffected).
//!
//! The policy is rendered from the chart (`helm template`); its binding, cluster-wide in the
//! chart, is narrowed here to the test's namespace so the test cannot disturb other tests (the
//! autoscaler e2e writes pods with an unbound `hybrid-runtime` token), and both are deleted at
//! the end.
#![cfg(feature = "e2e")]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use hybrid_e2e::operator::LOADED_ANNOTATION;
use hybrid_e2e::{Check, TestNamespace, client, kubectl, parse_yaml, poll, repo_root};
use hybrid_operator::hybridmodel::serving::{RUNTIME_SERVICE_ACCOUNT, runtime_rbac};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::AuthInfo;
use kube::{Client, Config, ResourceExt};
use serde_json::json;

/// Long enough for the apiserver's policy informer and CEL compilation.
const EFFECTIVE_WITHIN: Duration = Duration::from_secs(30);
const TEMPLATE: &str = "templates/runtime-self-patch-policy.yaml";
/// The `reason` every refusal of the policy starts with.
const REFUSED: &str = "hybrid-runtime may";

/// Deletes the policy and its binding (cluster-scoped) when dropped, also when the test panics.
struct PolicyGuard(String);

impl Drop for PolicyGuard {
    fn drop(&mut self) {
        let deleted = kubectl([
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            &self.0,
            "--ignore-not-found",
            "--wait=false",
        ]);
        match deleted {
            Ok(out) if out.success => {}
            Ok(out) => eprintln!("could not delete policy {}: {}", self.0, out.stderr),
            Err(e) => eprintln!("could not delete policy {}: {e:#}", self.0),
        }
    }
}

fn helm_template(release: &str, extra: &[&str]) -> Result<String> {
    let helm = std::env::var_os("HELM").unwrap_or_else(|| "helm".into());
    let out = Command::new(&helm)
        .args(["template", release])
        .arg(repo_root().join("charts/hybrid-operator"))
        // helm's offline default (1.20) is below the chart's kubeVersion.
        .args(["--kube-version", "1.35.0"])
        .args(extra)
        .output()
        .context("run helm (make e2e sets HELM)")?;
    if !out.status.success() {
        bail!(
            "helm template {}: {}",
            extra.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn kind(object: &DynamicObject) -> &str {
    object.types.as_ref().map_or("", |t| t.kind.as_str())
}

/// A client that authenticates with `token` only (the admin kubeconfig's server and CA).
async fn token_client(token: &str) -> Result<Client> {
    let mut config = Config::infer().await?;
    config.auth_info = serde_json::from_value::<AuthInfo>(json!({ "token": token }))?;
    Ok(Client::try_from(config)?)
}

async fn mint_token(accounts: &Api<ServiceAccount>, bound_to: Option<&Pod>) -> Result<String> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(), // the apiserver's own
            expiration_seconds: Some(600),
            bound_object_ref: bound_to.map(|pod| BoundObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                name: Some(pod.name_any()),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let answer = accounts
        .create_token_request(RUNTIME_SERVICE_ACCOUNT, &PostParams::default(), &request)
        .await
        .context("TokenRequest")?;
    Ok(answer.status.context("TokenRequest without status")?.token)
}

fn runtime_pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([("app".to_owned(), name.to_owned())])),
            annotations: Some(BTreeMap::from([("other".to_owned(), "1".to_owned())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some(RUNTIME_SERVICE_ACCOUNT.to_owned()),
            containers: vec![Container {
                name: "serve".to_owned(),
                image: Some("ghcr.io/hybrid-operator/hybrid-runtime:e2e".to_owned()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Merge-patches pod `name` as the runtime does (`annotate_pod` in runtime/src/serve/state.rs).
async fn merge_patch(pods: &Api<Pod>, name: &str, patch: serde_json::Value) -> kube::Result<Pod> {
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

fn loaded(value: &str) -> serde_json::Value {
    json!({"metadata": {"annotations": {LOADED_ANNOTATION: value}}})
}

/// Asserts that `result` is the policy's refusal (403 Forbidden, message naming the policy and
/// `what`), not an RBAC denial or another error.
fn assert_denied(result: kube::Result<Pod>, policy: &str, what: &str, case: &str) {
    match result {
        Ok(pod) => panic!(
            "{case}: admitted, expected the policy to deny it; pod now {:?} {:?}",
            pod.metadata.labels, pod.metadata.annotations
        ),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{case}: {status:?}");
            assert!(
                status
                    .message
                    .contains(&format!("ValidatingAdmissionPolicy '{policy}'"))
                    && status.message.contains(REFUSED)
                    && status.message.contains(what),
                "{case}: denied, but not by the policy for {what:?}: {}",
                status.message
            );
        }
        Err(e) => panic!("{case}: {e:#}"),
    }
}

#[tokio::test]
async fn runtime_service_account_may_patch_only_its_own_pods_loaded_revisions() {
    let admin = client().await.expect("cluster client");
    let ns = TestNamespace::create(&admin, "runtime-policy")
        .await
        .expect("namespace");

    // The toggle: off renders neither object.
    let off = helm_template(ns.name(), &["--set", "runtimePodPolicy.enabled=false"])
        .expect("helm template with the policy off");
    assert!(
        !off.contains("kind: ValidatingAdmissionPolicy"),
        "runtimePodPolicy.enabled=false still renders the policy"
    );
    // On by default: the policy and its binding.
    let rendered = helm_template(ns.name(), &["--show-only", TEMPLATE]).expect("helm template");
    let mut objects = parse_yaml(&rendered).expect("rendered policy is YAML objects");
    let kinds: Vec<&str> = objects.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ]
    );
    let policy_name = objects[0].name_any();
    assert_eq!(objects[0].data["spec"]["failurePolicy"], "Fail");
    let binding = &mut objects[1];
    assert_eq!(binding.data["spec"]["policyName"], policy_name.as_str());
    assert_eq!(binding.data["spec"]["validationActions"], json!(["Deny"]));
    assert!(
        binding.data["spec"]["matchResources"].is_null(),
        "the chart binds the policy in every namespace"
    );
    // Here: only in this test's namespace (see the module comment).
    binding.data["spec"]["matchResources"] = json!({"namespaceSelector": {"matchLabels":
        {"kubernetes.io/metadata.name": ns.name()}}});

    // What the operator applies in a namespace with a HybridModel.
    let rbac = runtime_rbac(ns.name());
    let post = PostParams::default();
    let accounts = ns.api::<ServiceAccount>();
    accounts
        .create(&post, &rbac.service_account)
        .await
        .expect("ServiceAccount");
    ns.api::<Role>()
        .create(&post, &rbac.role)
        .await
        .expect("Role");
    ns.api::<RoleBinding>()
        .create(&post, &rbac.role_binding)
        .await
        .expect("RoleBinding");
    let pods = ns.api::<Pod>();
    let pod_a = pods.create(&post, &runtime_pod("a")).await.expect("pod a");
    let pod_b = pods.create(&post, &runtime_pod("b")).await.expect("pod b");

    let bound = mint_token(&accounts, Some(&pod_a))
        .await
        .expect("token bound to pod a");
    let unbound = mint_token(&accounts, None).await.expect("unbound token");
    let as_a: Api<Pod> = Api::namespaced(
        token_client(&bound).await.expect("client with a's token"),
        ns.name(),
    );
    let as_unbound: Api<Pod> = Api::namespaced(
        token_client(&unbound)
            .await
            .expect("client with the unbound token"),
        ns.name(),
    );

    // Without the policy, RBAC alone lets a's token write pod b: the hole the policy closes.
    let before = merge_patch(&as_a, "b", loaded("before-policy"))
        .await
        .expect("without the policy, the Role lets hybrid-runtime patch any pod");
    assert_eq!(
        before
            .annotations()
            .get(LOADED_ANNOTATION)
            .map(String::as_str),
        Some("before-policy")
    );

    let _guard = PolicyGuard(policy_name.clone());
    for object in &objects {
        let yaml = serde_yaml::to_string(object).expect("serialize");
        ns.apply_yaml(&yaml)
            .await
            .unwrap_or_else(|e| panic!("apply {} {policy_name}: {e:#}", kind(object)));
    }
    // The apiserver type-checks the CEL expressions: no warnings.
    let policies = Api::<DynamicObject>::all_with(
        admin.clone(),
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicy",
        )),
    );
    let status = poll("the policy's type check", EFFECTIVE_WITHIN, || async {
        let policy = policies.get(&policy_name).await?;
        Ok(match policy.data["status"]["observedGeneration"].as_i64() {
            Some(g) if Some(g) == policy.metadata.generation => {
                Check::Done(policy.data["status"].clone())
            }
            _ => Check::Waiting(format!("status {}", policy.data["status"])),
        })
    })
    .await
    .expect("policy status");
    assert!(
        status["typeChecking"]["expressionWarnings"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "CEL type-check warnings: {status}"
    );

    // (2) b's pod, with a's token: denied once the policy is in effect (asynchronous).
    let denied = poll(
        "the policy to deny a's token on pod b",
        EFFECTIVE_WITHIN,
        || async {
            Ok(match merge_patch(&as_a, "b", loaded("from-a")).await {
                Ok(_) => Check::Waiting("admitted".to_owned()),
                Err(e) => Check::Done(e),
            })
        },
    )
    .await
    .expect("policy in effect");
    assert_denied(
        Err(denied),
        &policy_name,
        "the token is bound to pod a, so pod b is refused",
        "a's token on pod b",
    );

    // (1) Its own pod, only the annotation the runtime writes: admitted.
    let patched = merge_patch(&as_a, "a", loaded(r#"{"servingRevision":"r1"}"#))
        .await
        .expect("a's token may write hybrid.dev/loaded-revisions on pod a");
    assert_eq!(
        patched
            .annotations()
            .get(LOADED_ANNOTATION)
            .map(String::as_str),
        Some(r#"{"servingRevision":"r1"}"#)
    );
    assert_eq!(patched.labels(), pod_a.labels());
    assert_eq!(
        patched.annotations().get("other").map(String::as_str),
        Some("1")
    );

    // (3) Its own pod, anything else: denied.
    assert_denied(
        merge_patch(&as_a, "a", json!({"metadata": {"labels": {"app": "x"}}})).await,
        &policy_name,
        "a change to labels is refused",
        "a's token on a's labels",
    );
    assert_denied(
        merge_patch(
            &as_a,
            "a",
            json!({"metadata": {"annotations": {"other": "2"}}}),
        )
        .await,
        &policy_name,
        "annotations (other) is refused",
        "a's token on another annotation of a",
    );
    assert_denied(
        merge_patch(
            &as_a,
            "a",
            json!({"metadata": {"annotations": {LOADED_ANNOTATION: "r2", "extra": "1"}}}),
        )
        .await,
        &policy_name,
        "annotations (extra) is refused",
        "a's token adding an annotation next to loaded-revisions",
    );
    assert_denied(
        merge_patch(&as_a, "a", json!({"spec": {"activeDeadlineSeconds": 60}})).await,
        &policy_name,
        "a change to spec is refused",
        "a's token on a's spec",
    );

    // (4) A token of the same ServiceAccount not bound to a pod: denied even on pod a.
    assert_denied(
        merge_patch(&as_unbound, "a", loaded("unbound")).await,
        &policy_name,
        "the token is not bound to a Pod, so pod a is refused",
        "unbound token on pod a",
    );

    // (5) Other users are not affected: the admin patches b, labels and annotations alike.
    let by_admin = merge_patch(
        &pods,
        "b",
        json!({"metadata": {"labels": {"app": "admin"},
            "annotations": {LOADED_ANNOTATION: "admin", "other": "admin"}}}),
    )
    .await
    .expect("the admin may still patch pod b");
    assert_eq!(
        by_admin.labels().get("app").map(String::as_str),
        Some("admin")
    );

    // None of the denied writes reached the pods.
    let a = pods.get("a").await.expect("pod a");
    assert_eq!(a.labels(), pod_a.labels(), "pod a's labels");
    assert_eq!(
        a.annotations().get(LOADED_ANNOTATION).map(String::as_str),
        Some(r#"{"servingRevision":"r1"}"#)
    );
    assert_eq!(a.annotations().get("other").map(String::as_str), Some("1"));
    assert!(!a.annotations().contains_key("extra"));
    assert_eq!(
        a.spec.as_ref().and_then(|s| s.active_deadline_seconds),
        None
    );
    assert_eq!(pod_b.metadata.uid, by_admin.metadata.uid);
}
