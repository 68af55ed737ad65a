//! The real `hybrid-operator` binary against the local cluster, authenticated as the Helm
//! chart's ServiceAccount with the chart's RBAC (not cluster admin: a missing permission fails
//! these tests).
//!
//! Nothing runs inside KWOK pods, so the tests play two roles the real containers would:
//! - Job results: the Corpus/Adapter annotation `hybrid.dev/job-pod-annotations` (a real
//!   operator feature: pod annotations for its Jobs) carries KWOK's
//!   `hybrid.dev/kwok-termination-message` with a realistic `IndexResult`/`TrainResult`, so the
//!   Job's pod ends with that termination message, as `hybrid-runtime index|train` would write.
//! - Serving pods: [`report_loaded`] writes the `hybrid.dev/loaded-revisions` annotation on each
//!   serving pod exactly as the runtime does after (re)loading `config.yaml`.
//!
//! Tests share one cluster and each runs its own operator (which watches all namespaces), so they
//! take turns through [`LOCK`].

use anyhow::{Context, Result, bail};
use hybrid_crds::{Adapter, Corpus, HybridModel};
use hybrid_e2e::operator::{
    AuditLog, Operator, bound_claims, delete_volumes, install_chart_rbac, kwok_result,
    operator_writes, report_loaded, serving_pod_uids, set_job_pod_annotations,
};
use hybrid_e2e::{Check, TestNamespace, client, kubectl, poll, repo_root};
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(120);
const MODEL: &str = "advisor";
const CORPUS: &str = "finance-notes";
const ADAPTER: &str = "finance-compliance";

fn index_result(revision: &str) -> serde_json::Value {
    json!({"kind": "IndexResult", "revision": revision, "documents": 6, "chunks": 84,
        "reused": 0, "reembedded": 84, "durationSeconds": 12.5,
        "location": format!("/pvc/hybrid-artifacts/indexes/{revision}.tar.gz")})
}

fn train_result(revision: &str) -> serde_json::Value {
    json!({"kind": "TrainResult", "revision": revision,
        "artifactUri": format!("file:///pvc/hybrid-artifacts/adapters/{revision}"),
        "finalLoss": 1.42, "evalLoss": null, "steps": 40, "tokensPerSecond": 910.0,
        "durationSeconds": 95.0})
}

fn cond<'a>(conditions: &'a [Condition], t: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == t)
}

fn kubectl_ok(args: &[&str]) -> Result<String> {
    let out = kubectl(args)?;
    if !out.success {
        bail!("kubectl {}: {}", args.join(" "), out.stderr);
    }
    Ok(out.stdout)
}

/// The namespace with the chart's RBAC, the claims the example uses, and the operator's
/// kubeconfig.
async fn setup(prefix: &str) -> Result<(TestNamespace, std::path::PathBuf)> {
    let client = client().await?;
    hybrid_e2e::install_crds(&client).await?;
    let ns = TestNamespace::create(&client, prefix).await?;
    let kubeconfig = install_chart_rbac(ns.name())?;
    bound_claims(&ns, &["hybrid-models", "hybrid-artifacts"]).await?;
    Ok((ns, kubeconfig))
}

async fn wait_corpus(ns: &TestNamespace, revision: &str) -> Result<Corpus> {
    let api: Api<Corpus> = ns.api();
    poll(
        &format!("Corpus active revision {revision}"),
        WAIT,
        || async {
            let c = api.get(CORPUS).await?;
            let st = c.status.clone().unwrap_or_default();
            let active = st.active_revision.as_ref().map(|a| a.revision.clone());
            let indexed = cond(&st.conditions, "Indexed").is_some_and(|c| c.status == "True");
            Ok(if active.as_deref() == Some(revision) && indexed {
                Check::Done(c)
            } else {
                Check::Waiting(format!("active {active:?}, conditions {:?}", st.conditions))
            })
        },
    )
    .await
}

async fn wait_adapter(ns: &TestNamespace, revision: &str) -> Result<Adapter> {
    let api: Api<Adapter> = ns.api();
    poll(
        &format!("Adapter active revision {revision}"),
        WAIT,
        || async {
            let a = api.get(ADAPTER).await?;
            let st = a.status.clone().unwrap_or_default();
            let active = st.active_revision.as_ref().map(|a| a.revision.clone());
            let trained = cond(&st.conditions, "Trained").is_some_and(|c| c.status == "True");
            Ok(if active.as_deref() == Some(revision) && trained {
                Check::Done(a)
            } else {
                Check::Waiting(format!("active {active:?}, conditions {:?}", st.conditions))
            })
        },
    )
    .await
}

/// Waits until config.yaml names `adapter` and `index`, plays the runtime's report, and waits
/// for `status.loaded` to show them with Serving True `RevisionsLoaded`.
async fn serve_and_report(ns: &TestNamespace, adapter: &str, index: &str) -> Result<HybridModel> {
    let cms: Api<ConfigMap> = ns.api();
    poll("config.yaml with the new revisions", WAIT, || async {
        let yaml = cms
            .get_opt(&format!("{MODEL}-runtime"))
            .await?
            .and_then(|c| c.data)
            .and_then(|d| d.get("config.yaml").cloned())
            .unwrap_or_default();
        Ok(if yaml.contains(adapter) && yaml.contains(index) {
            Check::Done(())
        } else {
            Check::Waiting(yaml)
        })
    })
    .await?;
    let models: Api<HybridModel> = ns.api();
    // The Deployment's pods must exist (and be Ready) before they can report.
    let serving = poll("serving pods report", WAIT, || async {
        Ok(match report_loaded(ns, MODEL).await {
            Ok(rev) => Check::Done(rev),
            Err(e) => Check::Waiting(format!("{e:#}")),
        })
    })
    .await?;
    poll(
        "status.loaded and Serving RevisionsLoaded",
        WAIT,
        || async {
            let m = models.get(MODEL).await?;
            let st = m.status.clone().unwrap_or_default();
            let loaded = st.loaded.clone().unwrap_or_default();
            let serving_cond = cond(&st.conditions, "Serving");
            let done = loaded.serving_revision.as_deref() == Some(serving.as_str())
                && loaded.adapters.iter().any(|a| a.revision == adapter)
                && loaded.indexes.iter().any(|i| i.revision == index)
                && serving_cond
                    .is_some_and(|c| c.status == "True" && c.reason == "RevisionsLoaded")
                && st.serving_revision.as_deref() == Some(serving.as_str());
            Ok(if done {
                Check::Done(m)
            } else {
                // A pod may have been replaced by the Deployment since: report again.
                let _ = report_loaded(ns, MODEL).await;
                Check::Waiting(format!("loaded {loaded:?}, Serving {serving_cond:?}"))
            })
        },
    )
    .await
}

async fn patch_config_map(ns: &TestNamespace, name: &str, key: &str, value: &str) -> Result<()> {
    let patch = json!({"data": {key: value}});
    ns.api::<ConfigMap>()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Waits until the operator has reconciled at least `n` times since it started.
async fn wait_reconciles(op: &Operator, n: f64) -> Result<()> {
    poll("operator reconciles", WAIT, || async {
        let count = op
            .metric_sum("hybrid_operator_reconcile_duration_seconds_count")
            .unwrap_or(0.0);
        Ok(if count >= n {
            Check::Done(())
        } else {
            Check::Waiting(format!("{count} reconciles"))
        })
    })
    .await
}

#[tokio::test]
async fn finance_example_indexes_trains_serves_and_swaps_without_restarts() -> Result<()> {
    let _turn = LOCK.lock().await;
    let (ns, kubeconfig) = setup("op-finance").await?;
    let n = ns.name().to_owned();
    let audit = AuditLog::open()?;
    let examples = repo_root().join("examples/finance");
    let examples = examples.to_string_lossy();

    // 1. kubectl apply -f examples/finance/ before the operator runs, so every Job it creates
    //    already carries its simulated result.
    kubectl_ok(&["-n", &n, "apply", "-f", &examples])?;
    set_job_pod_annotations(
        &n,
        "corpus",
        CORPUS,
        &kwok_result(&index_result("ix-e2e-1")),
    )?;
    set_job_pod_annotations(
        &n,
        "adapter",
        ADAPTER,
        &kwok_result(&train_result("ad-e2e-1")),
    )?;
    let mut op = Operator::start(&kubeconfig, &n)?;

    wait_corpus(&ns, "ix-e2e-1").await?;
    let adapter = wait_adapter(&ns, "ad-e2e-1").await?;
    serve_and_report(&ns, "ad-e2e-1", "ix-e2e-1").await?;
    kubectl_ok(&[
        "-n",
        &n,
        "wait",
        "--for=condition=Ready",
        &format!("hybridmodel/{MODEL}"),
        "--timeout=60s",
    ])
    .context("kubectl wait --for=condition=Ready")?;
    let model = ns.api::<HybridModel>().get(MODEL).await?;
    let st = model.status.clone().unwrap_or_default();
    let lineage = st.lineage.clone().context("status.lineage")?;
    assert_eq!(lineage.adapters[0].revision, "ad-e2e-1");
    assert_eq!(
        lineage.adapters[0].dataset_digest,
        adapter
            .status
            .as_ref()
            .and_then(|s| s.dataset_digest.clone()),
        "lineage starts at the dataset digest"
    );
    assert!(
        lineage.adapters[0]
            .training_job
            .as_deref()
            .is_some_and(|j| j.starts_with("finance-compliance-train-"))
    );
    assert_eq!(lineage.indexes[0].revision, "ix-e2e-1");
    assert!(
        lineage.indexes[0]
            .index_job
            .as_deref()
            .is_some_and(|j| j.starts_with("finance-notes-index-"))
    );
    assert_eq!(lineage.serving_revision, st.serving_revision);
    assert_eq!(
        st.desired.as_ref().and_then(|d| d.serving_revision.clone()),
        st.serving_revision
    );
    assert!(op.running(), "operator exited; see {}", op.log.display());

    // 2. Re-apply the same manifests and force a resync by restarting the operator: no Job,
    //    no write at all (Lease renewals aside).
    let mark = audit.mark()?;
    kubectl_ok(&["-n", &n, "apply", "-f", &examples])?;
    op.restart()?;
    wait_reconciles(&op, 4.0).await?;
    // Give the watches time to deliver every object's first event after the restart.
    tokio::time::sleep(Duration::from_secs(10)).await;
    wait_reconciles(&op, 4.0).await?;
    let writes = operator_writes(&audit, mark, &n)?;
    assert!(
        writes.is_empty(),
        "writes by the operator on an idle resync: {writes:#?}"
    );
    eprintln!(
        "idle resync: 0 writes by the operator after {} reconciles",
        op.metric_sum("hybrid_operator_reconcile_duration_seconds_count")?
    );

    // 3. Edit one corpus document: exactly one index Job, new revision active and served,
    //    same pods.
    let pods_before = serving_pod_uids(&ns, MODEL).await?;
    set_job_pod_annotations(
        &n,
        "corpus",
        CORPUS,
        &kwok_result(&index_result("ix-e2e-2")),
    )?;
    let mark = audit.mark()?;
    patch_config_map(
        &ns,
        "finance-corpus",
        "credit-market-note-q1-2026.md",
        "Corporate credit spreads widened in the first quarter (edited by the e2e test).\n",
    )
    .await?;
    wait_corpus(&ns, "ix-e2e-2").await?;
    serve_and_report(&ns, "ad-e2e-1", "ix-e2e-2").await?;
    let jobs_created: Vec<String> = operator_writes(&audit, mark, &n)?
        .into_iter()
        .filter(|w| w.starts_with("create jobs"))
        .collect();
    assert_eq!(
        jobs_created.len(),
        1,
        "one index Job per edit: {jobs_created:?}"
    );
    assert!(
        jobs_created[0].contains("finance-notes-index-"),
        "{jobs_created:?}"
    );
    assert_eq!(
        serving_pod_uids(&ns, MODEL).await?,
        pods_before,
        "pods were recreated"
    );

    // 4. Change the dataset: one training Job, new adapter revision served without restarts.
    set_job_pod_annotations(
        &n,
        "adapter",
        ADAPTER,
        &kwok_result(&train_result("ad-e2e-2")),
    )?;
    let mark = audit.mark()?;
    let dataset = ns.api::<ConfigMap>().get("finance-dataset").await?;
    let mut train = dataset
        .data
        .clone()
        .unwrap_or_default()
        .remove("train.jsonl")
        .context("train.jsonl")?;
    train.push_str("{\"messages\": [{\"role\": \"user\", \"content\": \"What is a bond?\"}, {\"role\": \"assistant\", \"content\": \"A loan to an issuer that pays interest. This is general information, not personal investment advice.\"}]}\n");
    patch_config_map(&ns, "finance-dataset", "train.jsonl", &train).await?;
    wait_adapter(&ns, "ad-e2e-2").await?;
    serve_and_report(&ns, "ad-e2e-2", "ix-e2e-2").await?;
    let jobs_created: Vec<String> = operator_writes(&audit, mark, &n)?
        .into_iter()
        .filter(|w| w.starts_with("create jobs"))
        .collect();
    assert_eq!(
        jobs_created.len(),
        1,
        "one training Job per dataset change: {jobs_created:?}"
    );
    assert!(
        jobs_created[0].contains("finance-compliance-train-"),
        "{jobs_created:?}"
    );
    assert_eq!(
        serving_pod_uids(&ns, MODEL).await?,
        pods_before,
        "pods were recreated"
    );

    // 5. Kill the operator (SIGKILL) while an index Job runs, start it again: no second Job,
    //    and it converges.
    let mut slow = kwok_result(&index_result("ix-e2e-3"));
    slow["hybrid.dev/kwok-complete-after"] = json!("15s");
    set_job_pod_annotations(&n, "corpus", CORPUS, &slow)?;
    let mark = audit.mark()?;
    patch_config_map(
        &ns,
        "finance-corpus",
        "credit-market-note-q1-2026.md",
        "Corporate credit spreads widened sharply (second edit).\n",
    )
    .await?;
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = ns.api();
    poll("index Job created", WAIT, || async {
        let l = jobs
            .list(&ListParams::default().labels("app.kubernetes.io/component=index"))
            .await?;
        Ok(
            if l.items
                .iter()
                .any(|j| j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) == 0)
            {
                Check::Done(())
            } else {
                Check::Waiting(format!("{} index Jobs, all finished", l.items.len()))
            },
        )
    })
    .await?;
    op.restart()?;
    wait_corpus(&ns, "ix-e2e-3").await?;
    serve_and_report(&ns, "ad-e2e-2", "ix-e2e-3").await?;
    let jobs_created: Vec<String> = operator_writes(&audit, mark, &n)?
        .into_iter()
        .filter(|w| w.starts_with("create jobs") && !w.ends_with("409"))
        .collect();
    assert_eq!(
        jobs_created.len(),
        1,
        "a restart must not duplicate the Job: {jobs_created:?}"
    );

    // 6. A failing training Job: the previous adapter keeps serving, Event with the pod's
    //    reason, backoff retries, then Stalled; fixing the spec recovers.
    let config_before = ns
        .api::<ConfigMap>()
        .get(&format!("{MODEL}-runtime"))
        .await?
        .data;
    set_job_pod_annotations(
        &n,
        "adapter",
        ADAPTER,
        &json!({
            "hybrid.dev/kwok-fail": "OOMKilled",
            "hybrid.dev/kwok-exit-code": "137",
        }),
    )?;
    let hp = json!({"spec": {"hyperparameters": {"epochs": 3}}});
    ns.api::<Adapter>()
        .patch(ADAPTER, &PatchParams::default(), &Patch::Merge(&hp))
        .await?;
    let adapters: Api<Adapter> = ns.api();
    let stalled = poll(
        "Adapter Stalled after the retry budget",
        Duration::from_secs(240),
        || async {
            let a = adapters.get(ADAPTER).await?;
            let st = a.status.clone().unwrap_or_default();
            let s = cond(&st.conditions, "Stalled");
            Ok(if s.is_some_and(|c| c.status == "True") {
                Check::Done(a)
            } else {
                Check::Waiting(format!(
                    "retry {:?}, conditions {:?}",
                    st.retry, st.conditions
                ))
            })
        },
    )
    .await?;
    let st = stalled.status.clone().unwrap_or_default();
    assert_eq!(
        st.active_revision.as_ref().map(|a| a.revision.as_str()),
        Some("ad-e2e-2"),
        "previous adapter stays active"
    );
    assert_eq!(
        st.retry.as_ref().map(|r| r.failures),
        Some(3),
        "three attempts: {:?}",
        st.retry
    );
    assert_eq!(
        cond(&st.conditions, "Stalled").map(|c| c.reason.as_str()),
        Some("RetryBudgetExhausted")
    );
    assert_eq!(
        ns.api::<ConfigMap>()
            .get(&format!("{MODEL}-runtime"))
            .await?
            .data,
        config_before,
        "a failed training must not touch the serving config"
    );
    let events: Api<Event> = ns.api();
    let failed: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(ADAPTER)
                && e.reason.as_deref() == Some("JobFailed")
        })
        .filter_map(|e| e.message)
        .collect();
    assert!(
        failed
            .iter()
            .any(|m| m.contains("OOMKilled") && m.contains("137")),
        "Events: {failed:?}"
    );

    set_job_pod_annotations(
        &n,
        "adapter",
        ADAPTER,
        &kwok_result(&train_result("ad-e2e-3")),
    )?;
    let hp = json!({"spec": {"hyperparameters": {"epochs": 2, "learningRate": 0.0001}}});
    ns.api::<Adapter>()
        .patch(ADAPTER, &PatchParams::default(), &Patch::Merge(&hp))
        .await?;
    wait_adapter(&ns, "ad-e2e-3").await?;
    serve_and_report(&ns, "ad-e2e-3", "ix-e2e-3").await?;
    assert_eq!(
        serving_pod_uids(&ns, MODEL).await?,
        pods_before,
        "pods were recreated"
    );
    assert!(op.running(), "operator exited; see {}", op.log.display());
    drop(op);
    delete_volumes(ns.client(), &n).await;
    Ok(())
}

#[tokio::test]
async fn adapter_for_another_base_model_stalls_naming_both() -> Result<()> {
    let _turn = LOCK.lock().await;
    let (ns, kubeconfig) = setup("op-mismatch").await?;
    let n = ns.name().to_owned();
    let examples = repo_root().join("examples/finance");
    for f in [
        "servingpolicy.yaml",
        "corpus-configmap.yaml",
        "corpus.yaml",
        "dataset-configmap.yaml",
        "hybridmodel.yaml",
    ] {
        kubectl_ok(&["-n", &n, "apply", "-f", &examples.join(f).to_string_lossy()])?;
    }
    let adapter = std::fs::read_to_string(examples.join("adapter.yaml"))?.replace(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "Qwen2.5-0.5B-Instruct.Q4_K_M.gguf",
    );
    ns.apply_yaml(&adapter).await?;
    let _op = Operator::start(&kubeconfig, &n)?;
    let models: Api<HybridModel> = ns.api();
    let m = poll("HybridModel Stalled", WAIT, || async {
        let m = models.get(MODEL).await?;
        let st = m.status.clone().unwrap_or_default();
        Ok(
            if cond(&st.conditions, "Stalled").is_some_and(|c| c.status == "True") {
                Check::Done(m)
            } else {
                Check::Waiting(format!("{:?}", st.conditions))
            },
        )
    })
    .await?;
    let st = m.status.unwrap_or_default();
    let stalled = cond(&st.conditions, "Stalled").context("Stalled")?;
    assert_eq!(stalled.reason, "BaseModelMismatch");
    assert!(
        stalled
            .message
            .contains("pvc://hybrid-models/Qwen2.5-0.5B-Instruct.Q4_K_M.gguf"),
        "{}",
        stalled.message
    );
    assert!(
        stalled
            .message
            .contains("pvc://hybrid-models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "{}",
        stalled.message
    );
    assert!(stalled.message.contains(ADAPTER), "{}", stalled.message);
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = ns.api();
    assert!(
        deployments.get_opt(MODEL).await?.is_none(),
        "nothing deployed for a mismatched adapter"
    );
    delete_volumes(ns.client(), &n).await;
    Ok(())
}
