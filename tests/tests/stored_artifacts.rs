//! Stored revisions end to end: the real `hybrid-operator` binary (as the chart's
//! ServiceAccount) deletes index archives that fall out of `retainRevisions`, guards a Corpus
//! that has stored revisions with the `hybrid.dev/stored-artifacts` finalizer, deletes its
//! revisions when it is deleted (never one another Corpus still lists), and lets it go with a
//! Warning when the prune Job fails.
//!
//! Index Job results are simulated as in `operator_lifecycle.rs` (KWOK termination messages
//! through `hybrid.dev/job-pod-annotations`). KWOK pods run nothing, so the test plays the
//! kubelet once: it runs the real `hybrid-runtime prune` with the prune Job's own arguments, the
//! claim's mount `/pvc/hybrid-artifacts` mapped to a temporary directory, and checks that exactly
//! the dropped archive is gone.
#![cfg(feature = "e2e")]

use anyhow::{Context as _, Result, bail};
use hybrid_crds::{Adapter, Corpus};
use hybrid_e2e::autoscale::runtime_binary;
use hybrid_e2e::operator::{
    AuditLog, Operator, bound_claims, delete_volumes, install_chart_rbac, kwok_result,
    operator_writes, set_job_pod_annotations,
};
use hybrid_e2e::{Check, TestNamespace, client, poll};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);
/// Every operator watches every namespace, so two tests of this file running at once would each
/// see the other's operator prune, finalize and write Events too: they take turns.
static ONE_OPERATOR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const FINALIZER: &str = "hybrid.dev/stored-artifacts";
const ARCHIVES: &str = "/pvc/hybrid-artifacts/indexes";

fn location(revision: &str) -> String {
    format!("{ARCHIVES}/{revision}.tar.gz")
}

fn index_result(revision: &str) -> serde_json::Value {
    json!({"kind": "IndexResult", "revision": revision, "documents": 1, "chunks": 2,
        "reused": 0, "reembedded": 2, "durationSeconds": 1.0, "location": location(revision)})
}

fn corpus_yaml(name: &str, config_map: &str) -> String {
    format!(
        "apiVersion: hybrid.dev/v1alpha1\nkind: Corpus\nmetadata: {{name: {name}}}\n\
         spec:\n  sources:\n  - configMap: {{name: {config_map}}}\n\
         \x20 embedding: {{model: pvc://hybrid-models/all-MiniLM-L6-v2, dimensions: 384}}\n\
         \x20 vectorStore: {{embedded: {{storage: pvc://hybrid-artifacts/indexes}}}}\n\
         \x20 retainRevisions: 1\n"
    )
}

fn config_map_yaml(name: &str, text: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata:\n  rates.md: \"{text}\"\n"
    )
}

/// Waits for `revision` active, and returns the Corpus.
async fn wait_active(api: &Api<Corpus>, name: &str, revision: &str) -> Result<Corpus> {
    poll(
        &format!("Corpus {name} active revision {revision}"),
        WAIT,
        || async {
            let c = api.get(name).await?;
            let active = c
                .status
                .as_ref()
                .and_then(|s| s.active_revision.as_ref())
                .map(|a| a.revision.clone());
            Ok(if active.as_deref() == Some(revision) {
                Check::Done(c)
            } else {
                Check::Waiting(format!("active {active:?}"))
            })
        },
    )
    .await
}

/// The `--location` arguments of a prune Job.
fn prune_locations(job: &Job) -> Vec<String> {
    let args = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.args.clone())
        .unwrap_or_default();
    args.windows(2)
        .filter(|w| w[0] == "--location")
        .map(|w| w[1].clone())
        .collect()
}

async fn prune_jobs(ns: &TestNamespace, corpus: &str) -> Result<Vec<Job>> {
    Ok(ns
        .api::<Job>()
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/component=prune,hybrid.dev/corpus={corpus}"
        )))
        .await?
        .items)
}

/// Waits until no Corpus or Adapter is left in another terminating namespace. Revisions are
/// shared cluster-wide by location, and earlier tests' namespaces (deleted while their operator
/// was already gone) still hold Corpora and Adapters listing the same fake locations (`ad-1`,
/// `ix-1`) until this test's operator finalizes them; a deletion meanwhile would keep the
/// location as shared and delete nothing.
async fn no_leftovers(client: &kube::Client, own: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    poll(
        "earlier tests' Corpora and Adapters to be finalized",
        WAIT,
        || async {
            let terminating: Vec<String> = Api::<Namespace>::all(client.clone())
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|ns| {
                    ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
                })
                .filter_map(|ns| ns.metadata.name)
                .filter(|name| name != own)
                .collect();
            let lp = ListParams::default();
            let mut left: Vec<String> = Api::<Corpus>::all(client.clone())
                .list(&lp)
                .await?
                .items
                .into_iter()
                .filter_map(|c| c.metadata.namespace.map(|ns| (ns, c.metadata.name)))
                .chain(
                    Api::<Adapter>::all(client.clone())
                        .list(&lp)
                        .await?
                        .items
                        .into_iter()
                        .filter_map(|a| a.metadata.namespace.map(|ns| (ns, a.metadata.name))),
                )
                .filter(|(ns, _)| terminating.contains(ns))
                .map(|(ns, name)| format!("{ns}/{}", name.unwrap_or_default()))
                .collect();
            left.sort();
            Ok(if left.is_empty() {
                Check::Done(())
            } else {
                Check::Waiting(format!("left: {left:?}"))
            })
        },
    )
    .await
}

/// Waits until the object is gone (its finalizer released).
async fn wait_gone<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    poll(&format!("{name} deleted"), WAIT, || async {
        Ok(match api.get_opt(name).await? {
            None => Check::Done(()),
            Some(c) => Check::Waiting(format!(
                "finalizers {:?}, deletionTimestamp {:?}",
                c.meta().finalizers,
                c.meta().deletion_timestamp
            )),
        })
    })
    .await
}

/// Waits for an Event with `reason` on the `kind` named `name`, and returns its note.
async fn wait_event(ns: &TestNamespace, kind: &str, name: &str, reason: &str) -> Result<String> {
    let events: Api<Event> = ns.api();
    poll(&format!("Event {reason} on {name}"), WAIT, || async {
        let list = events.list(&ListParams::default()).await?;
        let found = list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.involved_object.name.as_deref() == Some(name)
                && e.involved_object.kind.as_deref() == Some(kind)
        });
        Ok(match found {
            Some(e) => Check::Done(e.message.unwrap_or_default()),
            None => Check::Waiting("no such Event yet".into()),
        })
    })
    .await
}

/// A directory standing in for the claim's volume, removed at the end.
struct Volume(std::path::PathBuf);

impl Volume {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the real `hybrid-runtime prune` with `job`'s arguments, `/pvc/hybrid-artifacts` mapped
/// to `volume`.
fn run_prune_job(job: &Job, volume: &std::path::Path) -> Result<serde_json::Value> {
    let args = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.args.clone())
        .context("prune Job has no args")?;
    let result = volume.join("termination-log");
    let mapped: Vec<String> = args
        .iter()
        .map(|a| {
            if a == "/dev/termination-log" {
                result.display().to_string()
            } else {
                a.replace("/pvc/hybrid-artifacts", &volume.display().to_string())
            }
        })
        .collect();
    let out = std::process::Command::new(runtime_binary()?)
        .args(&mapped)
        .output()?;
    if !out.status.success() {
        bail!(
            "hybrid-runtime {mapped:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_str(&std::fs::read_to_string(result)?)?)
}

#[tokio::test]
async fn dropped_revisions_are_pruned_and_a_deleted_corpus_takes_its_own_with_it() -> Result<()> {
    let _turn = ONE_OPERATOR.lock().await;
    let client = client().await?;
    hybrid_e2e::install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "op-artifacts").await?;
    let n = ns.name().to_owned();
    let kubeconfig = install_chart_rbac(&n)?;
    bound_claims(&ns, &["hybrid-models", "hybrid-artifacts"]).await?;
    let audit = AuditLog::open()?;
    let corpora: Api<Corpus> = ns.api();
    let config_maps: Api<ConfigMap> = ns.api();

    ns.apply_yaml(&config_map_yaml("rates-docs", "rate 4.50%"))
        .await?;
    ns.apply_yaml(&corpus_yaml("rates", "rates-docs")).await?;
    set_job_pod_annotations(&n, "corpus", "rates", &kwok_result(&index_result("ix-1")))?;
    let mut op = Operator::start(&kubeconfig, &n)?;
    no_leftovers(&client, &n).await?;

    // 1. The first stored revision puts the finalizer on.
    let c = wait_active(&corpora, "rates", "ix-1").await?;
    assert!(
        c.metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == FINALIZER)),
        "finalizers: {:?}",
        c.metadata.finalizers
    );

    // 2. A second revision: ix-1 is retained (retainRevisions: 1), nothing is pruned.
    let mark = audit.mark()?;
    set_job_pod_annotations(&n, "corpus", "rates", &kwok_result(&index_result("ix-2")))?;
    let edit = |text: &'static str| {
        let config_maps = config_maps.clone();
        async move {
            config_maps
                .patch(
                    "rates-docs",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": {"rates.md": text}})),
                )
                .await
        }
    };
    edit("rate 4.25%").await?;
    let c = wait_active(&corpora, "rates", "ix-2").await?;
    let previous: Vec<String> = c
        .status
        .unwrap_or_default()
        .previous_revisions
        .into_iter()
        .map(|r| r.revision)
        .collect();
    assert_eq!(previous, ["ix-1"]);
    let pruned: Vec<String> = operator_writes(&audit, mark, &n)?
        .into_iter()
        .filter(|w| w.starts_with("create jobs") && w.contains("-prune-"))
        .collect();
    assert!(pruned.is_empty(), "nothing left the history: {pruned:?}");

    // 3. A third: ix-1 leaves the history, and one prune Job deletes exactly its archive.
    set_job_pod_annotations(&n, "corpus", "rates", &kwok_result(&index_result("ix-3")))?;
    edit("rate 4.00%").await?;
    wait_active(&corpora, "rates", "ix-3").await?;
    let jobs = poll("prune Job of ix-1", WAIT, || async {
        let jobs = prune_jobs(&ns, "rates").await?;
        Ok(if jobs.is_empty() {
            Check::Waiting("none yet".into())
        } else {
            Check::Done(jobs)
        })
    })
    .await?;
    assert_eq!(jobs.len(), 1, "one prune Job");
    assert_eq!(prune_locations(&jobs[0]), [location("ix-1")]);
    // Its pod would see the archives through the claim: run it on a copy of that volume.
    let volume_dir = std::env::temp_dir().join(format!("hybrid-e2e-artifacts-{n}"));
    let _ = std::fs::remove_dir_all(&volume_dir);
    std::fs::create_dir_all(volume_dir.join("indexes"))?;
    let volume = Volume(volume_dir);
    for rev in ["ix-1", "ix-2", "ix-3"] {
        std::fs::write(
            volume.path().join(format!("indexes/{rev}.tar.gz")),
            rev.as_bytes(),
        )?;
    }
    let result = run_prune_job(&jobs[0], volume.path())?;
    assert_eq!(result["kind"], "PruneResult", "{result}");
    assert_eq!(result["deleted"], 1, "{result}");
    assert!(!volume.path().join("indexes/ix-1.tar.gz").exists());
    assert!(volume.path().join("indexes/ix-2.tar.gz").exists());
    assert!(volume.path().join("indexes/ix-3.tar.gz").exists());

    // 4. A twin Corpus with the same inputs shares revision ix-3. Deleting `rates` deletes
    //    only ix-2 (its own), then lets the Corpus go.
    ns.apply_yaml(&corpus_yaml("twin", "rates-docs")).await?;
    set_job_pod_annotations(&n, "corpus", "twin", &kwok_result(&index_result("ix-3")))?;
    wait_active(&corpora, "twin", "ix-3").await?;
    let series =
        format!(r#"hybrid_operator_stalled{{kind="Corpus",name="rates",namespace="{n}"}}"#);
    assert!(op.metrics()?.contains(&series), "{series} while it exists");
    corpora.delete("rates", &DeleteParams::default()).await?;
    wait_gone(&corpora, "rates").await?;
    let note = wait_event(&ns, "Corpus", "rates", "ArtifactsDeleted").await?;
    assert!(note.contains(&location("ix-2")), "{note}");
    assert!(
        !note.contains("ix-3"),
        "the twin's revision is kept: {note}"
    );
    // Its per-object series go with it (the operator's watch sees the deletion).
    poll("the deleted Corpus's series dropped", WAIT, || async {
        Ok(if op.metrics()?.contains(&series) {
            Check::Waiting(format!("{series} still exported"))
        } else {
            Check::Done(())
        })
    })
    .await?;

    // 5. A prune Job that fails (KWOK fails its pods): the Corpus is still deleted, and a
    //    Warning names what was left in storage.
    set_job_pod_annotations(
        &n,
        "corpus",
        "twin",
        &json!({"hybrid.dev/kwok-fail": "Error", "hybrid.dev/kwok-exit-code": "1"}),
    )?;
    tokio::time::sleep(Duration::from_secs(2)).await; // the annotation's own reconcile
    corpora.delete("twin", &DeleteParams::default()).await?;
    wait_gone(&corpora, "twin").await?;
    let note = wait_event(&ns, "Corpus", "twin", "PruneFailed").await?;
    assert!(note.contains(&location("ix-3")), "{note}");

    if !op.running() {
        bail!("operator exited; see {}", op.log.display());
    }
    op.kill()?;
    delete_volumes(&client, &n).await;
    Ok(())
}

#[tokio::test]
async fn a_deleted_adapter_takes_its_adapter_directory_with_it() -> Result<()> {
    let _turn = ONE_OPERATOR.lock().await;
    let client = client().await?;
    hybrid_e2e::install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "op-artifacts-adapter").await?;
    let n = ns.name().to_owned();
    let kubeconfig = install_chart_rbac(&n)?;
    bound_claims(&ns, &["hybrid-models", "hybrid-artifacts"]).await?;
    let audit = AuditLog::open()?;
    let adapters: Api<Adapter> = ns.api();

    ns.apply_yaml(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tone}\ndata:\n  train.jsonl: \
         '{\"messages\": [{\"role\": \"user\", \"content\": \"Rates?\"}, \
         {\"role\": \"assistant\", \"content\": \"4.25%. Not advice.\"}]}'\n",
    )
    .await?;
    ns.apply_yaml(
        "apiVersion: hybrid.dev/v1alpha1\nkind: Adapter\nmetadata: {name: tone}\nspec:\n\
         \x20 baseModel: {source: pvc://hybrid-models/SmolLM2-135M-Instruct.Q4_1.gguf, format: gguf}\n\
         \x20 dataset:\n  - configMap: {name: tone}\n\
         \x20 trainer: {builtin: {}}\n\
         \x20 resources: {gpus: 1, gpuResourceName: nvidia.com/gpu}\n\
         \x20 tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]\n\
         \x20 output: {storage: pvc://hybrid-artifacts/adapters}\n",
    )
    .await?;
    let artifact = "/pvc/hybrid-artifacts/adapters/ad-1";
    set_job_pod_annotations(
        &n,
        "adapter",
        "tone",
        &kwok_result(&json!({"kind": "TrainResult", "revision": "ad-1",
            "artifactUri": format!("file://{artifact}"), "finalLoss": 1.2, "evalLoss": null,
            "steps": 10, "tokensPerSecond": 900.0, "durationSeconds": 30.0})),
    )?;
    let mut op = Operator::start(&kubeconfig, &n)?;
    no_leftovers(&client, &n).await?;

    let adapter = poll("Adapter tone trained", WAIT, || async {
        let a = adapters.get("tone").await?;
        let active = a
            .status
            .as_ref()
            .and_then(|s| s.active_revision.as_ref())
            .map(|r| r.revision.clone());
        Ok(if active.as_deref() == Some("ad-1") {
            Check::Done(a)
        } else {
            Check::Waiting(format!("active {active:?}"))
        })
    })
    .await?;
    assert!(
        adapter
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == FINALIZER)),
        "finalizers: {:?}",
        adapter.metadata.finalizers
    );

    let mark = audit.mark()?;
    adapters.delete("tone", &DeleteParams::default()).await?;
    wait_gone(&adapters, "tone").await?;
    let note = wait_event(&ns, "Adapter", "tone", "ArtifactsDeleted").await?;
    assert!(note.contains(artifact), "{note}");
    // The Job went with its owner (garbage collection); the audit log saw it created.
    let created: Vec<String> = operator_writes(&audit, mark, &n)?
        .into_iter()
        .filter(|w| w.starts_with("create jobs") && w.contains("tone-prune-"))
        .collect();
    assert_eq!(created.len(), 1, "one prune Job: {created:?}");

    if !op.running() {
        bail!("operator exited; see {}", op.log.display());
    }
    op.kill()?;
    delete_volumes(&client, &n).await;
    Ok(())
}
